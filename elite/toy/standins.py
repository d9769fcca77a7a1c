"""Stand-ins for SD v1-4's VAE and UNet and for CLIP, in the real architectures, trained on the toy world.

- VAE: diffusers `AutoencoderKL`, 32 px -> 16x16x4 latents (2x downsampling, no attention in the middle block),
  trained as a deterministic autoencoder (the posterior mean, no KL) on reconstruction, then its posterior is
  collapsed to the mean so `latent_dist.sample()` gives the same latents as `.mean`.
- CLIP: transformers `CLIPModel` (text + vision towers) trained contrastively on full captions, so the
  image features carry identity as real CLIP's do. Its text tower is the base model's text encoder, its
  vision tower ELITE's image encoder.
- UNet: diffusers `UNet2DConditionModel` with cross-attention below the top level, v-prediction on a cosine
  schedule (the v loss weighs the clean-image error by snr + 1, about 1 at high noise, where colour is
  decided; epsilon-prediction weighs it by snr, about 0 there), trained text-to-image on the frozen text
  tower.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import compute_snr
from transformers import CLIPModel, CLIPTokenizer

from elite import model_configs as configs
from elite.toy.bank import Bank, caption, full_caption
from elite.toy.fit import Progress, fit

LATENT_CHANNELS = 4  # 16x16x4 latents for 32x32x3 renders (2x downsampling; 8x8 latents lost colour and pattern)


def build_vae(size: int) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=LATENT_CHANNELS,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
        sample_size=size,
        scaling_factor=1.0,
        mid_block_add_attention=False,
    )


def train_vae(
    vae: AutoencoderKL,
    bank: Bank,
    steps: int,
    seed: int,
    batch: int = 32,
    lr: float = 2e-3,
    progress: Progress = None,
) -> AutoencoderKL:
    gen = torch.Generator().manual_seed(seed)

    def step_loss() -> torch.Tensor:
        x = bank.images[torch.randint(len(bank), (batch,), generator=gen)]
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        return F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)

    vae.train()
    fit(vae.parameters(), steps, step_loss, lr, weight_decay=0.0, pct_start=0.05, progress=progress)
    vae.eval()
    deterministic_posterior(vae)
    with torch.no_grad():
        z = torch.cat(
            [vae.encode(bank.images[i : i + 256]).latent_dist.mean for i in range(0, min(len(bank), 2048), 256)]
        )
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return vae


@torch.no_grad()
def deterministic_posterior(vae: AutoencoderKL) -> None:
    """Collapse the posterior to its mean (log-variance -30): trained on the mean only, its variance head is
    untrained, while ELITE's and TI's training sample from `latent_dist`, which must give the mean."""
    vae.quant_conv.weight[LATENT_CHANNELS:] = 0
    vae.quant_conv.bias[LATENT_CHANNELS:] = -30.0


def build_clip(size: int, max_tokens: int, width: int = 64) -> CLIPModel:
    text = {**configs.CLIP_TOKENS, **configs.tower(width, 2 * width, 3, 4), "max_position_embeddings": max_tokens}
    vision = {**configs.tower(width, 2 * width, 4, 4), "image_size": size, "patch_size": 4}
    text["projection_dim"] = vision["projection_dim"] = width
    return configs.clip(dict(text_config=text, vision_config=vision, projection_dim=width))


def tokens(tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(
        texts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids


CLIP_MEAN = torch.tensor(configs.CLIP_MEAN).view(1, 3, 1, 1)
CLIP_STD = torch.tensor(configs.CLIP_STD).view(1, 3, 1, 1)


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> CLIP-normalised pixel values (what CLIPImageProcessor gives at the same size)."""
    return ((images + 1) / 2 - CLIP_MEAN) / CLIP_STD


def train_clip(
    clip: CLIPModel,
    tokenizer: CLIPTokenizer,
    bank: Bank,
    steps: int,
    seed: int,
    batch: int = 256,
    lr: float = 2e-3,
    progress: Progress = None,
) -> CLIPModel:
    gen = torch.Generator().manual_seed(seed)
    captions = [full_caption(s) for s in bank.specs]
    ids = tokens(tokenizer, captions)

    def step_loss() -> torch.Tensor:
        idx = torch.randint(len(bank), (batch,), generator=gen)
        out = clip(input_ids=ids[idx], pixel_values=clip_pixels(bank.images[idx]))
        same = (ids[idx][:, None, :] == ids[idx][None, :, :]).all(-1).float()  # equal captions are positives
        target = same / same.sum(-1, keepdim=True)
        return 0.5 * (
            torch.sum(-target * out.logits_per_image.log_softmax(-1), -1).mean()
            + torch.sum(-target * out.logits_per_text.log_softmax(-1), -1).mean()
        )

    clip.train()
    fit(clip.parameters(), steps, step_loss, lr, weight_decay=0.05, pct_start=0.1, progress=progress)
    return clip.eval()


def build_unet(
    latent_size: int,
    text_dim: int,
    widths: tuple[int, int, int] = (32, 64, 128),
    top_attention: bool = False,
) -> UNet2DConditionModel:
    """Three levels (16x16, 8x8, 4x4) and the middle, one resnet each; cross-attention below the top level, and
    at 16x16 too with `top_attention` (where a 2x2-pixel stripe is one token). Like SD v1, the prompt reaches the
    UNet through cross-attention only (no pooled text embedding: ELITE's conditioning is read by the attention
    processors, see docs/toy.md)."""
    top = "CrossAttnDownBlock2D" if top_attention else "DownBlock2D"
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        layers_per_block=1,
        block_out_channels=widths,
        down_block_types=(top, "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", top.replace("Down", "Up")),
        cross_attention_dim=text_dim,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def build_scheduler() -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False
    )


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    z = torch.cat([vae.encode(images[i : i + batch]).latent_dist.mean for i in range(0, len(images), batch)])
    return z * vae.config.scaling_factor


def min_snr_weights(scheduler: DDPMScheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample weights of a v-prediction loss: min(SNR, gamma) / (SNR + 1), i.e. min-SNR-gamma's weighting of
    the x0 error (Hang et al. 2023); gamma 0: every weight 1 (plain MSE on v)."""
    if gamma == 0:
        return torch.ones(t.shape)
    snr = compute_snr(scheduler, t)
    return snr.clamp(max=gamma) / (snr + 1)


def train_unet(
    unet: UNet2DConditionModel,
    text_encoder,
    tokenizer: CLIPTokenizer,
    latents: torch.Tensor,
    bank: Bank,
    steps: int,
    seed: int,
    p_modes: dict[str, float],
    batch: int = 64,
    lr: float = 1e-3,
    drop_p: float = 0.1,
    template_p: float = 0.0,
    scene_p: float = 1.0,
    ema_decay: float = 0.999,
    snr_gamma: float = 0.0,
    progress: Progress = None,
) -> UNet2DConditionModel:
    """Text-to-image on the bank (which holds no held-out identity). Returns the EMA. `snr_gamma` > 0 weights each
    sample's v-prediction loss by min(SNR, gamma) / (SNR + 1) (min-SNR-gamma, Hang et al. 2023), 0 = plain MSE."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    scheduler = build_scheduler()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 200) * (0.5 + 0.5 * math.cos(math.pi * s / steps))
    )
    unet.train()
    for step in range(steps):
        idx = torch.randint(len(bank), (batch,), generator=gen)
        texts = [
            caption(bank.specs[i], rng, p_modes, drop_p=drop_p, template_p=template_p, scene_p=scene_p)
            for i in idx.tolist()
        ]
        with torch.no_grad():
            cond = text_encoder(tokens(tokenizer, texts))[0]
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        xt = scheduler.add_noise(x0, noise, t)
        target = scheduler.get_velocity(x0, noise, t)
        pred = unet(xt, t, cond).sample
        loss = (
            F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3)) * min_snr_weights(scheduler, t, snr_gamma)
        ).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            d = min(ema_decay, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - d)
        if progress:
            progress(step, loss.item())
    return ema

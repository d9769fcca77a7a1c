"""What each stage trains and how it computes its loss.

The loss is computed inside an `nn.Module` (`GlobalStageModule`, `LocalStageModule`) whose only
registered submodule is the `EliteModel`: `accelerate` wraps it (DDP when there are several
processes) and only ELITE's trainable weights take part in the gradient all-reduce. The frozen models
(VAE, text encoder, UNet, CLIP vision tower) are held in a plain `Frozen` record beside it; the UNet's
cross-attention layers carry ELITE's processors, which reference the EliteModel's K/V projections, so
gradients reach those through the UNet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, LMSDiscreteScheduler, UNet2DConditionModel
from PIL import Image
from torch import nn
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModel

from elite.errors import EliteError
from elite.models.attention import EliteConditioning
from elite.models.elite_model import EliteModel
from elite.models.features import clip_layer_features
from elite.models.text import encode_with_words
from elite.pipeline import ElitePipeline, _load
from elite.train.data import GlobalDataset, LocalDataset, Row
from elite.train.losses import diffusion_target, ldm_loss, local_value_regulariser, word_regulariser


@dataclass
class Frozen:
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    unet: UNet2DConditionModel
    image_encoder: CLIPVisionModel
    image_processor: CLIPImageProcessor
    noise_scheduler: DDPMScheduler
    base: str
    image_encoder_src: str

    @property
    def latent_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @classmethod
    def in_memory(cls, **models) -> Frozen:
        """Models built in this process (benchmarks): no folder to name as their source."""
        return cls(**models, base="(in memory)", image_encoder_src="(in memory)")


def load_frozen(base: str, encoder_src: str, device: torch.device, dtype: torch.dtype) -> Frozen:
    """The frozen models, in eval mode without gradients, on `device` in `dtype`."""
    kw = {"torch_dtype": dtype}
    frozen = Frozen(
        vae=_load("the VAE", base, AutoencoderKL.from_pretrained, subfolder="vae", **kw),
        text_encoder=_load(
            "the text encoder", base, CLIPTextModel.from_pretrained, subfolder="text_encoder", dtype=dtype
        ),
        tokenizer=_load("the tokenizer", base, CLIPTokenizer.from_pretrained, subfolder="tokenizer"),
        unet=_load("the UNet", base, UNet2DConditionModel.from_pretrained, subfolder="unet", **kw),
        image_encoder=_load("the image encoder", encoder_src, CLIPVisionModel.from_pretrained, dtype=dtype),
        image_processor=_load("the image processor", encoder_src, CLIPImageProcessor.from_pretrained),
        noise_scheduler=_load("the scheduler", base, DDPMScheduler.from_pretrained, subfolder="scheduler"),
        base=base,
        image_encoder_src=encoder_src,
    )
    if frozen.noise_scheduler.config.prediction_type not in ("epsilon", "v_prediction"):
        raise EliteError(
            f"{base}/scheduler: prediction_type is {frozen.noise_scheduler.config.prediction_type!r}; "
            "ELITE trains with the epsilon (Stable Diffusion v1) or v_prediction target"
        )
    for model in (frozen.vae, frozen.text_encoder, frozen.unet, frozen.image_encoder):
        model.requires_grad_(False).eval().to(device)
    return frozen


def global_only(init: EliteModel) -> EliteModel:
    """A copy of the global part (mapper + global K/V) of `init`, without any local branch."""
    model = EliteModel(replace(init.config, has_local=False, kv_shapes=dict(init.config.kv_shapes)))
    model.global_mapper.load_state_dict(init.global_mapper.state_dict())
    model.global_kv.load_state_dict(init.global_kv.state_dict())
    return model


def save_weights(elite: EliteModel, directory: str | Path, encoder_src: str) -> None:
    """save_pretrained, naming the CLIP tower relative to `directory` (or by hub id), so the folder
    works with `elite generate --weights` and ElitePipeline.from_pretrained."""
    if Path(encoder_src).exists():
        elite.config.image_encoder = os.path.relpath(Path(encoder_src).resolve(), Path(directory).resolve())
    else:
        elite.config.image_encoder = encoder_src
    elite.save_pretrained(directory)


class StageModule(nn.Module):
    def __init__(self, elite: EliteModel, frozen: Frozen, cfg) -> None:
        super().__init__()
        self.elite = elite
        object.__setattr__(self, "frozen", frozen)  # a plain attribute: not part of this module's parameters
        object.__setattr__(self, "cfg", cfg)

    @property
    def device(self) -> torch.device:
        return self.elite.device

    def noisy_latents(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample a latent from the target's VAE distribution, noise and a uniform timestep, each from the
        draw's own generator (seeded by `noise_seed`), so they depend on the draw only. Returns the noisy
        latents, what the UNet must predict (noise, or velocity for a v-prediction base) and the timesteps."""
        f, dev = self.frozen, self.device
        if "latent_moments" in batch:
            mean, logvar = batch["latent_moments"].to(dev).float().chunk(2, dim=1)
        else:
            with torch.no_grad():
                dist = f.vae.encode(batch["pixel_values"].to(dev, f.vae.dtype)).latent_dist
            mean, logvar = dist.mean.float(), dist.logvar.float()
        shape, steps = mean.shape[1:], f.noise_scheduler.config.num_train_timesteps
        eps, noise, t = [], [], []
        for seed in batch["noise_seed"].tolist():
            g = torch.Generator().manual_seed(int(seed))
            eps.append(torch.randn(shape, generator=g))
            noise.append(torch.randn(shape, generator=g))
            t.append(torch.randint(0, steps, (), generator=g))
        noise = torch.stack(noise).to(dev)
        t = torch.stack(t).to(dev)
        latents = (mean + torch.exp(0.5 * logvar) * torch.stack(eps).to(dev)) * f.vae.config.scaling_factor
        noisy = f.noise_scheduler.add_noise(latents, noise, t).to(f.unet.dtype)
        return noisy, diffusion_target(f.noise_scheduler, latents, noise, t), t

    def clip_features(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        f = self.frozen
        return clip_layer_features(
            f.image_encoder, pixels.to(self.device, f.image_encoder.dtype), self.elite.config.layers
        )


def encode_stage1_text(
    text_encoder, ids: torch.Tensor, slots: torch.Tensor, words: torch.Tensor, primary_only: torch.Tensor
) -> torch.Tensor:
    """Stage 1's text states: each row's words at its slots, w0 alone where `primary_only` (word dropout: the
    dataset reserved one slot for such rows instead of five)."""
    if not primary_only.any():
        return encode_with_words(text_encoder, ids, slots, words)
    parts = [(rows, k) for rows, k in ((~primary_only, words.shape[1]), (primary_only, 1)) if rows.any()]
    encoded = [encode_with_words(text_encoder, ids[rows], slots[rows], words[rows, :k]) for rows, k in parts]
    text = encoded[0].new_empty(ids.shape[0], *encoded[0].shape[1:])
    for (rows, _), states in zip(parts, encoded, strict=True):
        text[rows] = states
    return text


class GlobalStageModule(StageModule):
    """Stage 1: all five words at the placeholder (w0 alone in the rows the dataset marks `primary_only`:
    train_global.word_dropout); loss = L_LDM + reg_weight * mean|v| over all five words."""

    def forward(self, batch: dict) -> dict:
        f = self.frozen
        noisy, target, t = self.noisy_latents(batch)
        words = self.elite.global_mapper(self.clip_features(batch["clip_pixels"]))
        dev = self.device
        text = encode_stage1_text(
            f.text_encoder, batch["input_ids"].to(dev), batch["slot"].to(dev), words, batch["primary_only"].to(dev)
        )
        pred = f.unet(noisy, t, encoder_hidden_states=text.to(f.unet.dtype)).sample
        ldm, reg = ldm_loss(pred, target), word_regulariser(words)
        return {"loss": ldm + self.cfg.reg_weight * reg, "loss_ldm": ldm.detach(), "loss_reg": reg.detach()}


class LocalStageModule(StageModule):
    """Stage 2: w0 of the frozen global mapper at the placeholder, the local tokens of the masked object
    through the local branch (lambda = local_scale for every row, w0's position from the tokenizer);
    loss = L_LDM inside the loss mask + reg_weight * mean over layers of mean|V_l|."""

    def forward(self, batch: dict) -> dict:
        f, dev = self.frozen, self.device
        noisy, target, t = self.noisy_latents(batch)
        slots = batch["slot"].to(dev)
        with torch.no_grad():
            w0 = self.elite.global_mapper(self.clip_features(batch["clip_pixels"]))[:, :1]
            text = encode_with_words(f.text_encoder, batch["input_ids"].to(dev), slots, w0)
        tokens = self.elite.local_mapper(self.clip_features(batch["clip_object"]), batch["clip_mask"].to(dev))
        cond = EliteConditioning(
            text=text.to(f.unet.dtype),
            local_tokens=tokens,
            local_scale=torch.full((tokens.shape[0],), float(self.cfg.local_scale), device=dev),
            word_index=slots,
        )
        pred = f.unet(noisy, t, encoder_hidden_states=cond).sample
        ldm = ldm_loss(pred, target, batch["loss_mask"].to(dev))
        reg = local_value_regulariser(self.elite.local_kv, tokens)
        return {"loss": ldm + self.cfg.reg_weight * reg, "loss_ldm": ldm.detach(), "loss_reg": reg.detach()}


class GlobalStage:
    name = "train_global"
    need_mask = False
    module_class = GlobalStageModule

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def build(self, init: EliteModel, frozen: Frozen) -> EliteModel:
        model = global_only(init)
        model.requires_grad_(True)
        return model

    def dataset(self, rows: list[Row], frozen: Frozen, clip, cache=None):
        return GlobalDataset(rows, self.cfg, frozen.tokenizer, clip, cache)

    def sample_lam(self) -> float:
        return 0.0


class LocalStage:
    name = "train_local"
    need_mask = True
    module_class = LocalStageModule

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def build(self, init: EliteModel, frozen: Frozen) -> EliteModel:
        """The global part of `init` frozen, plus a fresh local branch (K_l/V_l from the UNet's own K/V)."""
        model = global_only(init)
        model.requires_grad_(False)
        model.add_local(frozen.unet, seed=self.cfg.seed)
        model.local_mapper.requires_grad_(True)
        model.local_kv.requires_grad_(True)
        return model.float()

    def dataset(self, rows: list[Row], frozen: Frozen, clip, cache=None):
        return LocalDataset(rows, self.cfg, frozen.tokenizer, clip, frozen.latent_factor)

    def sample_lam(self) -> float:
        return self.cfg.sample_lam


@torch.no_grad()
def sample_grid(frozen: Frozen, elite: EliteModel, concepts: list, cfg, lam: float) -> Image.Image:
    """One row per concept (`elite.train.samples`): concept | generation with `sample_prompt`, with the
    weights as they are now (every row from the same seed)."""
    pipe = ElitePipeline(
        vae=frozen.vae,
        text_encoder=frozen.text_encoder,
        tokenizer=frozen.tokenizer,
        unet=frozen.unet,
        scheduler=LMSDiscreteScheduler.from_config(frozen.noise_scheduler.config),
        image_encoder=frozen.image_encoder,
        image_processor=frozen.image_processor,
        elite=elite,
    )
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for concept in concepts:
        encoded = pipe.encode_concept(concept.image, concept.mask if elite.local_mapper is not None else None)
        image = pipe(
            cfg.sample_prompt,
            concept=encoded,
            lam=lam,
            num_inference_steps=cfg.sample_steps,
            guidance_scale=cfg.sample_guidance,
            generator=torch.Generator().manual_seed(cfg.seed),
        ).images[0]
        rows.append((concept.image.convert("RGB").resize(image.size, Image.BICUBIC), image))
    w, h = rows[0][1].size
    grid = Image.new("RGB", (w * 2, h * len(rows)))
    for i, (shown, generated) in enumerate(rows):
        grid.paste(shown, (0, i * h))
        grid.paste(generated, (w, i * h))
    return grid

"""Optimise a concept's word(s) on one image with the LDM loss (Textual Inversion and XTI).

TI learns one token embedding used in every cross-attention layer. XTI learns one per cross-attention
layer (16 in Stable Diffusion v1: resolutions 64, 32, 16, 8): the prompt is encoded once per layer with
that layer's word, and each layer attends to its own text states. Both start from the class word's
embedding and are trained with AdamW on random templates and flips of the single concept image; the
loss is restricted to the object when a mask is given.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from elite.config.baselines import InversionConfig
from elite.errors import EliteError
from elite.io import atomic_dir
from elite.models.attention import EliteConditioning, KVProjections, attach_base_processors, cross_attention_layers, layer_level
from elite.models.text import PLACEHOLDER, encode_with_words, tokenize_with_placeholder
from elite.pipeline import Concept
from elite.train.losses import ldm_loss
from elite.train.templates import TEMPLATES

METHODS = ("ti", "xti")
TI_KEY = "S*"


@dataclass
class Inversion:
    method: str
    class_word: str
    embeddings: dict[str, torch.Tensor]  # "S*" -> (D,) for TI; layer key -> (D,) for XTI
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)

    def concept(self) -> Concept:
        if self.method == "ti":
            return Concept(words=self.embeddings[TI_KEY].reshape(1, 1, -1), local_tokens=None)
        first = next(iter(self.embeddings.values()))
        return Concept(words=first.reshape(1, 1, -1), local_tokens=None,
                       layer_words={k: v.reshape(1, 1, -1) for k, v in self.embeddings.items()})

    def save(self, directory: str | Path) -> None:
        with atomic_dir(Path(directory)) as tmp:
            save_file({k: v.detach().float().contiguous().cpu() for k, v in self.embeddings.items()},
                      tmp / "learned_embeds.safetensors")
            meta = {"method": self.method, "class_word": self.class_word, "steps": self.steps,
                    "seconds": self.seconds, "final_loss": self.losses[-1] if self.losses else None}
            (tmp / "inversion.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "Inversion":
        directory = Path(directory)
        if not (directory / "inversion.json").is_file() or not (directory / "learned_embeds.safetensors").is_file():
            raise EliteError(f"{directory}: no learned embeddings (inversion.json + learned_embeds.safetensors); "
                             "make them with `elite baseline ti|xti`")
        meta = json.loads((directory / "inversion.json").read_text())
        return cls(meta["method"], meta["class_word"], load_file(directory / "learned_embeds.safetensors"),
                   meta["steps"], meta["seconds"])


def mix_styles(coarse: Inversion, fine: Inversion, num_levels: int) -> Concept:
    """XTI style mixing: `coarse`'s words in the low-resolution layers (shape), `fine`'s in the
    high-resolution ones (appearance); the split is at the middle resolution level."""
    if coarse.method != "xti" or fine.method != "xti":
        raise EliteError("style mixing needs two XTI inversions (one word per layer)")
    if set(coarse.embeddings) != set(fine.embeddings):
        raise EliteError("the two XTI inversions were made on different UNets")
    split = num_levels // 2
    words = {k: (coarse if layer_level(k, num_levels) >= split else fine).embeddings[k].reshape(1, 1, -1)
             for k in coarse.embeddings}
    return Concept(words=next(iter(words.values())), local_tokens=None, layer_words=words)


def _class_embedding(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, class_word: str) -> torch.Tensor:
    ids = tokenizer(class_word, add_special_tokens=False).input_ids
    if not ids:
        raise EliteError(f"class word {class_word!r} has no tokens; give a word such as 'dog'")
    return text_encoder.get_input_embeddings().weight[ids].mean(0).detach().clone()


def _image_tensors(image: Image.Image, mask: Image.Image | None, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    img = image.convert("RGB").resize((size, size), Image.BICUBIC)
    pixels = torch.from_numpy(np.asarray(img).astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    m = mask.convert("L").resize((size, size), Image.NEAREST) if mask is not None else Image.new("L", (size, size), 255)
    return pixels, torch.from_numpy((np.asarray(m) >= 128).astype(np.float32))[None]


def invert(base: str | Path, image: Image.Image, mask: Image.Image | None, method: str, cfg: InversionConfig,
           class_word: str, seed: int = 0, flip_p: float = 0.5, progress: bool = True) -> Inversion:
    if method not in METHODS:
        raise EliteError(f"unknown baseline {method!r}; choose one of: {', '.join(METHODS)}")
    start = time.perf_counter()
    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").requires_grad_(False).eval()
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").requires_grad_(False).eval()
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").requires_grad_(False).eval()
    noise_sched = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    attach_base_processors(unet)
    keys = [KVProjections.key(p) for p in cross_attention_layers(unet)] if method == "xti" else [TI_KEY]
    init = _class_embedding(tokenizer, text_encoder, class_word)
    words = torch.nn.Parameter(init[None].repeat(len(keys), 1))
    opt = torch.optim.AdamW([words], lr=cfg.lr, weight_decay=cfg.weight_decay)

    size = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    pixels, pmask = _image_tensors(image, mask, size)
    both = torch.stack([pixels, pixels.flip(-1)])
    with torch.no_grad():
        dists = vae.encode(both).latent_dist  # the image and its mirror: the only two targets, encoded once
    lat_mask = F.interpolate(torch.stack([pmask, pmask.flip(-1)]), size=dists.mean.shape[-2:], mode="nearest")
    prompts = [tokenize_with_placeholder(tokenizer, t.format(PLACEHOLDER)) for t in TEMPLATES]
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(cfg.steps), desc=f"{method} inversion", disable=not progress):
        flip = (torch.rand(cfg.batch_size, generator=gen) < flip_p).long()
        mean, std = dists.mean[flip], dists.std[flip]
        latents = (mean + std * torch.randn(mean.shape, generator=gen)) * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen)
        chosen = [prompts[i] for i in torch.randint(0, len(prompts), (cfg.batch_size,), generator=gen).tolist()]
        ids = torch.stack([p.input_ids for p in chosen])
        slots = torch.tensor([p.slot for p in chosen])
        states = {k: encode_with_words(text_encoder, ids, slots, words[i].expand(len(chosen), 1, -1)) for i, k in enumerate(keys)}
        text = states[TI_KEY] if method == "ti" else states
        pred = unet(noise_sched.add_noise(latents, noise, t), t, encoder_hidden_states=EliteConditioning(text=text)).sample
        loss = ldm_loss(pred, noise, lat_mask[flip] if mask is not None else None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not torch.isfinite(loss):
            raise EliteError(f"{method} inversion: loss became {loss.item()} at step {len(losses) + 1}; lower baselines.{method}.lr")
        losses.append(loss.item())
    embeddings = {k: words[i].detach().clone() for i, k in enumerate(keys)}
    return Inversion(method, class_word, embeddings, cfg.steps, time.perf_counter() - start, losses)

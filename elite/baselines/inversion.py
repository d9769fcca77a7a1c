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
from elite.models.attention import (
    EliteConditioning,
    KVProjections,
    attach_base_processors,
    cross_attention_layers,
    layer_level,
)
from elite.models.text import encode_with_words, tokenize_with_placeholder
from elite.pipeline import Concept
from elite.pixels import signed_pixels
from elite.placeholders import PLACEHOLDER
from elite.train.losses import diffusion_target, ldm_loss
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
        return Concept(
            words=first.reshape(1, 1, -1),
            local_tokens=None,
            layer_words={k: v.reshape(1, 1, -1) for k, v in self.embeddings.items()},
        )

    def save(self, directory: str | Path) -> None:
        with atomic_dir(Path(directory)) as tmp:
            save_file(
                {k: v.detach().float().contiguous().cpu() for k, v in self.embeddings.items()},
                tmp / "learned_embeds.safetensors",
            )
            meta = {
                "method": self.method,
                "class_word": self.class_word,
                "steps": self.steps,
                "seconds": self.seconds,
                "final_loss": self.losses[-1] if self.losses else None,
            }
            (tmp / "inversion.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> Inversion:
        directory = Path(directory)
        if not (directory / "inversion.json").is_file() or not (directory / "learned_embeds.safetensors").is_file():
            raise EliteError(
                f"{directory}: no learned embeddings (inversion.json + learned_embeds.safetensors); "
                "make them with `elite baseline ti|xti`"
            )
        meta = json.loads((directory / "inversion.json").read_text())
        return cls(
            meta["method"],
            meta["class_word"],
            load_file(directory / "learned_embeds.safetensors"),
            meta["steps"],
            meta["seconds"],
        )


def mix_styles(coarse: Inversion, fine: Inversion, num_levels: int) -> Concept:
    """XTI style mixing: `coarse`'s words in the low-resolution layers (shape), `fine`'s in the
    high-resolution ones (appearance); the split is at the middle resolution level."""
    if coarse.method != "xti" or fine.method != "xti":
        raise EliteError("style mixing needs two XTI inversions (one word per layer)")
    if set(coarse.embeddings) != set(fine.embeddings):
        raise EliteError("the two XTI inversions were made on different UNets")
    split = num_levels // 2
    words = {
        k: (coarse if layer_level(k, num_levels) >= split else fine).embeddings[k].reshape(1, 1, -1)
        for k in coarse.embeddings
    }
    return Concept(words=next(iter(words.values())), local_tokens=None, layer_words=words)


def _class_embedding(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, class_word: str) -> torch.Tensor:
    ids = tokenizer(class_word, add_special_tokens=False).input_ids
    if not ids:
        raise EliteError(f"class word {class_word!r} has no tokens; give a word such as 'dog'")
    return text_encoder.get_input_embeddings().weight[ids].mean(0).detach().clone()


def _image_tensors(image: Image.Image, mask: Image.Image | None, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    img = image.convert("RGB").resize((size, size), Image.BICUBIC)
    pixels = signed_pixels(img)
    m = (
        mask.convert("L").resize((size, size), Image.NEAREST)
        if mask is not None
        else Image.new("L", (size, size), 255)
    )
    return pixels, torch.from_numpy((np.asarray(m) >= 128).astype(np.float32))[None]


class InversionObjective:
    """The LDM loss of a concept's word(s) on the one image: the frozen base model, the image's (and its
    mirror's) latent distributions encoded once, the training templates."""

    def __init__(
        self,
        base: str | Path,
        image: Image.Image,
        mask: Image.Image | None,
        method: str,
        class_word: str,
        flip_p: float = 0.5,
    ) -> None:
        if method not in METHODS:
            raise EliteError(f"unknown baseline {method!r}; choose one of: {', '.join(METHODS)}")
        self.method, self.flip_p, self.masked = method, flip_p, mask is not None
        self.tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
        self.text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").requires_grad_(False).eval()
        vae = AutoencoderKL.from_pretrained(base, subfolder="vae").requires_grad_(False).eval()
        self.unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").requires_grad_(False).eval()
        self.noise_sched = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
        attach_base_processors(self.unet)
        self.keys = [KVProjections.key(p) for p in cross_attention_layers(self.unet)] if method == "xti" else [TI_KEY]
        self.init = _class_embedding(self.tokenizer, self.text_encoder, class_word)
        size = self.unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
        pixels, pmask = _image_tensors(image, mask, size)
        with torch.no_grad():  # the image and its mirror: the only two targets, encoded once
            self.dists = vae.encode(torch.stack([pixels, pixels.flip(-1)])).latent_dist
        self.scaling = vae.config.scaling_factor
        self.lat_mask = F.interpolate(
            torch.stack([pmask, pmask.flip(-1)]), size=self.dists.mean.shape[-2:], mode="nearest"
        )
        self.prompts = [tokenize_with_placeholder(self.tokenizer, t.format(PLACEHOLDER)) for t in TEMPLATES]

    def initial_words(self) -> torch.Tensor:
        return self.init[None].repeat(len(self.keys), 1)

    def loss(self, words: torch.Tensor, batch_size: int, gen: torch.Generator) -> torch.Tensor:
        """One draw of `batch_size` (flip, latent, noise, timestep, template), all from `gen`."""
        flip = (torch.rand(batch_size, generator=gen) < self.flip_p).long()
        mean, std = self.dists.mean[flip], self.dists.std[flip]
        latents = (mean + std * torch.randn(mean.shape, generator=gen)) * self.scaling
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, self.noise_sched.config.num_train_timesteps, (batch_size,), generator=gen)
        chosen = [self.prompts[i] for i in torch.randint(0, len(self.prompts), (batch_size,), generator=gen).tolist()]
        ids = torch.stack([p.input_ids for p in chosen])
        slots = torch.tensor([p.slot for p in chosen])
        states = {
            k: encode_with_words(self.text_encoder, ids, slots, words[i].expand(batch_size, 1, -1))
            for i, k in enumerate(self.keys)
        }
        text = states[TI_KEY] if self.method == "ti" else states
        pred = self.unet(
            self.noise_sched.add_noise(latents, noise, t), t, encoder_hidden_states=EliteConditioning(text=text)
        ).sample
        target = diffusion_target(self.noise_sched, latents, noise, t)
        return ldm_loss(pred, target, self.lat_mask[flip] if self.masked else None)


def invert(
    base: str | Path,
    image: Image.Image,
    mask: Image.Image | None,
    method: str,
    cfg: InversionConfig,
    class_word: str,
    seed: int = 0,
    flip_p: float = 0.5,
    progress: bool = True,
    objective: InversionObjective | None = None,
) -> Inversion:
    start = time.perf_counter()
    objective = objective or InversionObjective(base, image, mask, method, class_word, flip_p)
    words = torch.nn.Parameter(objective.initial_words())
    opt = torch.optim.AdamW([words], lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for step in tqdm(range(1, cfg.steps + 1), desc=f"{method} inversion", disable=not progress):
        loss = objective.loss(words, cfg.batch_size, gen)
        if not torch.isfinite(loss):
            raise EliteError(
                f"{method} inversion: loss became {loss.item()} at step {step}; lower baselines.{method}.lr"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    embeddings = {k: words[i].detach().clone() for i, k in enumerate(objective.keys)}
    return Inversion(method, class_word, embeddings, cfg.steps, time.perf_counter() - start, losses)

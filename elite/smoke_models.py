"""Tiny Stable-Diffusion-shaped models for the smoke profile, saved in the standard folder layouts.

The base model has Stable Diffusion v1's structure (3 cross-attention down blocks + 1 plain, mid
block, 1 plain + 3 cross-attention up blocks, 2 layers per block: 16 cross-attention layers, VAE with
8x downsampling, 4 latent channels) at a tiny width (the sizes: SMOKE_* of elite/model_configs.py),
and the real CLIP BPE tokenizer (49,408 tokens, built from the merges file that open-clip-torch ships),
so tokenization matches the paper models.
Weights are random with a fixed seed. Every later stage loads these through the same
`from_pretrained` calls that load SD v1-4 and CLIP ViT-L/14 in the paper profile.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import torch
from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTokenizer, CLIPVisionModel

from elite import model_configs as configs
from elite.models.elite_model import EliteModel


def _byte_unicode() -> list[str]:
    """CLIP's reversible byte -> printable-character table, in its canonical order."""
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in keep] + [chars[b] for b in range(256) if b not in keep]


def write_clip_tokenizer(out: Path) -> CLIPTokenizer:
    """CLIP's tokenizer (vocab.json + merges.txt) from open-clip's BPE merges; same ids as SD v1's."""
    import open_clip

    merges_gz = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(merges_gz) as f:
        merges = f.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    base = _byte_unicode()
    vocab = (
        base + [c + "</w>" for c in base] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tok = CLIPTokenizer(
        str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=77, pad_token="<|endoftext|>"
    )
    tok.save_pretrained(out)
    return CLIPTokenizer.from_pretrained(out)


def build_base(out: Path, seed: int) -> None:
    torch.manual_seed(seed)
    unet = configs.unet(configs.SMOKE_UNET)
    vae = configs.vae(configs.SMOKE_VAE)
    text_encoder = configs.clip_text(configs.SMOKE_TEXT)
    scheduler = PNDMScheduler(**configs.SD_SCHEDULER)
    save_sd_folder(out, vae, text_encoder, write_clip_tokenizer(out / "tokenizer"), unet, scheduler)


def save_sd_folder(out: Path, vae, text_encoder, tokenizer, unet, scheduler) -> None:
    """The Stable Diffusion folder layout (model_index.json + one subfolder per component), no safety checker."""
    StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(out)


def build_image_encoder(out: Path, seed: int) -> None:
    """A 6-layer CLIP vision tower with ViT-L/14's token layout (224 px, patch 14: CLS + 256 patches)."""
    torch.manual_seed(seed)
    configs.clip_vision(configs.SMOKE_VISION).save_pretrained(out)
    configs.clip_processor(configs.SMOKE_VISION["image_size"]).save_pretrained(out)


def init_elite_weights(
    base: Path,
    image_encoder: Path | str,
    out: Path,
    seed: int,
    feature_layers: list[int] | None = None,
    reference_depth: int = 24,
) -> None:
    """Freshly initialised ELITE weights for `base` (K/V copied from its UNet), naming `image_encoder`
    (a folder is recorded relative to `out`, so the models folder can move as a whole)."""
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    encoder = CLIPVisionModel.from_pretrained(image_encoder)
    text_dim = CLIPTextConfig.from_pretrained(base, subfolder="text_encoder").hidden_size
    local = Path(image_encoder).exists()
    name = os.path.relpath(Path(image_encoder).resolve(), Path(out).resolve()) if local else str(image_encoder)
    model = EliteModel.from_models(
        unet,
        encoder,
        text_dim,
        image_encoder_name=name,
        feature_layers=feature_layers,
        reference_depth=reference_depth,
        seed=seed,
    )
    model.save_pretrained(out)

"""Tiny Stable-Diffusion-shaped models for the smoke profile, saved in the standard folder layouts.

The base model has Stable Diffusion v1's structure (3 cross-attention down blocks + 1 plain, mid
block, 1 plain + 3 cross-attention up blocks, 2 layers per block: 16 cross-attention layers, VAE with
8x downsampling, 4 latent channels) at a tiny width, and the real CLIP BPE tokenizer (49,408 tokens,
built from the merges file that open-clip-torch ships), so tokenization matches the paper models.
Weights are random with a fixed seed. Every later stage loads these through the same
`from_pretrained` calls that load SD v1-4 and CLIP ViT-L/14 in the paper profile.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
)

from elite.models.elite_model import EliteModel

RESOLUTION = 64  # pixels; latents are 8x8
TEXT_DIM = 32
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


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
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 32, 64, 64),
        norm_num_groups=8,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=RESOLUTION,
        scaling_factor=0.18215,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=TEXT_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=TEXT_DIM,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )
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
    model = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=6,
            num_attention_heads=2,
            image_size=224,
            patch_size=14,
            projection_dim=32,
        )
    )
    model.save_pretrained(out)
    CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, image_mean=CLIP_MEAN, image_std=CLIP_STD
    ).save_pretrained(out)


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

"""The one home of the model architectures the project builds with random weights, and their builders.

Named configurations (read-only mappings of constructor arguments):

- SD v1 sized, as bench builds them: `SD_UNET` (SD v1-4's UNet), `SD_VAE`, `SD_TEXT` (SD v1's 768-wide
  12-layer CLIP text encoder), `VIT_L14` (a CLIP vision tower the size of ViT-L/14), `SD_SCHEDULER` (SD v1's
  noise schedule).
- the smoke profile's (elite/smoke_models.py): the same structures at a tiny width (`SMOKE_UNET`, `SMOKE_VAE`,
  `SMOKE_TEXT`, `SMOKE_VISION`) and the metric models of its evaluation (elite/evaluate/eval_models.py):
  `EVAL_CLIP` in openai/clip-vit-base-patch32's layout, `EVAL_DINO` in facebook/dino-vits16's.

The builders (`unet`, `vae`, `clip_text`, `clip_vision`, `clip`, `vit`, and the processors `clip_processor`,
`vit_processor`) take a configuration and keyword overrides, so a world plug-in (elite/toy) builds its own sizes
through the same calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
)

Config = Mapping[str, Any]

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _frozen(**kwargs: Any) -> Config:
    return MappingProxyType(kwargs)


def tower(width: int, mlp: int, layers: int, heads: int) -> Config:
    """A transformer's size: hidden width, MLP width, layers, attention heads (transformers' config keys)."""
    return _frozen(hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers, num_attention_heads=heads)


def _like(config: Config, **overrides: Any) -> Config:
    """`config` with some settings replaced."""
    return MappingProxyType({**config, **overrides})


# CLIP's BPE vocabulary (49,408 tokens), its 77 positions and its special tokens (SD v1's tokenizer)
CLIP_TOKENS = _frozen(
    vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407
)

# Stable Diffusion v1
SD_UNET = _frozen(
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD_VAE = _frozen(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    norm_num_groups=32,
    scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
SD_TEXT = _frozen(**CLIP_TOKENS, **tower(768, 3072, 12, 12), projection_dim=768, hidden_act="quick_gelu")
VIT_L14 = _frozen(
    **tower(1024, 4096, 24, 16), image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu"
)
SD_SCHEDULER = _frozen(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    skip_prk_steps=True,
    steps_offset=1,
    set_alpha_to_one=False,
)

# The smoke profile: SD v1's structure (16 cross-attention layers, 8x VAE downsampling, 4 latent channels) at a
# tiny width, 64 px images (8x8 latents)
SMOKE_RESOLUTION = 64
SMOKE_TEXT_DIM = 32
TINY_TOWER = tower(SMOKE_TEXT_DIM, 64, 2, 2)
SMOKE_UNET = _like(
    SD_UNET,
    sample_size=SMOKE_RESOLUTION // 8,
    block_out_channels=(32, 32, 64, 64),
    norm_num_groups=8,
    cross_attention_dim=SMOKE_TEXT_DIM,
)
SMOKE_VAE = _like(
    SD_VAE, block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=SMOKE_RESOLUTION
)
SMOKE_TEXT = _like(SD_TEXT, **TINY_TOWER, projection_dim=SMOKE_TEXT_DIM)
# 6 layers with ViT-L/14's token layout (224 px, patch 14: CLS + 256 patches)
SMOKE_VISION = _like(VIT_L14, **tower(48, 96, 6, 2), projection_dim=32)
# the smoke metric models: openai/clip-vit-base-patch32's layout (224 px, patch 32, projection head) and
# facebook/dino-vits16's (224 px, patch 16)
EVAL_CLIP = _frozen(
    text_config=_frozen(**CLIP_TOKENS, **TINY_TOWER),
    vision_config=_frozen(**TINY_TOWER, image_size=224, patch_size=32),
    projection_dim=32,
)
EVAL_DINO = _frozen(**TINY_TOWER, image_size=224, patch_size=16, qkv_bias=True)
EVAL_RESOLUTION = 224


def unet(config: Config, **overrides: Any) -> UNet2DConditionModel:
    return UNet2DConditionModel(**{**config, **overrides})


def vae(config: Config, **overrides: Any) -> AutoencoderKL:
    return AutoencoderKL(**{**config, **overrides})


def clip_text(config: Config, **overrides: Any) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(**{**config, **overrides}))


def clip_vision(config: Config, **overrides: Any) -> CLIPVisionModel:
    return CLIPVisionModel(CLIPVisionConfig(**{**config, **overrides}))


def clip(config: Config, **overrides: Any) -> CLIPModel:
    """A CLIPModel (text + vision towers + projections) from `text_config`, `vision_config`, `projection_dim`."""
    merged = {**config, **overrides}
    towers = {key: dict(merged.pop(key)) for key in ("text_config", "vision_config")}
    return CLIPModel(CLIPConfig(**towers, **merged))


def vit(config: Config, **overrides: Any) -> ViTModel:
    """A ViTModel without the pooling layer (DINO's CLS features)."""
    return ViTModel(ViTConfig(**{**config, **overrides}), add_pooling_layer=False)


def clip_processor(size: int) -> CLIPImageProcessor:
    """CLIP's preprocessing at `size` px: shortest edge resized, centre crop, CLIP's normalisation."""
    return CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )


def vit_processor(size: int) -> ViTImageProcessor:
    """DINO's preprocessing at `size` px: resized to a square (bilinear), ImageNet normalisation."""
    return ViTImageProcessor(
        do_resize=True,
        size={"height": size, "width": size},
        resample=2,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )

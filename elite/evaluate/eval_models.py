"""Tiny metric models for the smoke profile, in the folder layouts of the real ones.

`build_clip_eval` writes a CLIPModel with openai/clip-vit-base-patch32's layout (224 px, patch 32,
projection head, CLIP's real BPE tokenizer) and `build_dino_eval` a ViTModel with
facebook/dino-vits16's layout (224 px, patch 16, ImageNet normalisation), both with random weights
from a fixed seed, saved with `save_pretrained` together with their processors. The evaluation loads
them through the same `from_pretrained` calls as the real models.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, ViTConfig, ViTImageProcessor, ViTModel

from elite.smoke_models import CLIP_MEAN, CLIP_STD, write_clip_tokenizer

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def build_clip_eval(out: Path, seed: int) -> None:
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 224,
            "patch_size": 32,
        },
        projection_dim=32,
    )
    out = Path(out)
    CLIPModel(config).save_pretrained(out)
    CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        do_center_crop=True,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    ).save_pretrained(out)
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp)).save_pretrained(out)


def build_dino_eval(out: Path, seed: int) -> None:
    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=224,
        patch_size=16,
        qkv_bias=True,
    )
    out = Path(out)
    ViTModel(config, add_pooling_layer=False).save_pretrained(out)
    ViTImageProcessor(
        do_resize=True,
        size={"height": 224, "width": 224},
        resample=2,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    ).save_pretrained(out)

"""Tiny metric models for the smoke profile, in the folder layouts of the real ones.

`build_clip_eval` writes a CLIPModel with openai/clip-vit-base-patch32's layout (224 px, patch 32,
projection head, CLIP's real BPE tokenizer) and `build_dino_eval` a ViTModel with
facebook/dino-vits16's layout (224 px, patch 16, ImageNet normalisation), both with random weights
from a fixed seed (the sizes: EVAL_* of elite/model_configs.py), saved with `save_pretrained` together
with their processors. The evaluation loads them through the same `from_pretrained` calls as the real
models.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from elite import model_configs as configs
from elite.smoke_models import write_clip_tokenizer


def build_clip_eval(out: Path, seed: int) -> None:
    torch.manual_seed(seed)
    out = Path(out)
    configs.clip(configs.EVAL_CLIP).save_pretrained(out)
    configs.clip_processor(configs.EVAL_RESOLUTION).save_pretrained(out)
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp)).save_pretrained(out)


def build_dino_eval(out: Path, seed: int) -> None:
    torch.manual_seed(seed)
    out = Path(out)
    configs.vit(configs.EVAL_DINO).save_pretrained(out)
    configs.vit_processor(configs.EVAL_RESOLUTION).save_pretrained(out)

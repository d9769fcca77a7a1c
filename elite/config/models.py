"""params.yaml sections `models` (prepare_models stage) and `generate` (the `elite generate` defaults)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from elite.config.base import Section


class ModelsConfig(Section):
    dir: str  # prepare_models writes base/, image_encoder/, elite/ ... here
    seed: int
    base: str  # "builtin" = build the tiny smoke model; else a hub id or local folder (Stable Diffusion layout)
    image_encoder: str  # "builtin" or a hub id / folder of a CLIP vision tower
    clip_eval: str  # "builtin" or hub id / folder of the CLIP for CLIP-I/CLIP-T (paper: ViT-B/32)
    dino_eval: str  # "builtin" or hub id / folder of the DINO ViT for DINO-I (paper: ViT-S/16)
    feature_layers: list[int] = Field(min_length=1)
    reference_depth: int = Field(ge=1)
    sam: str  # "builtin" = the tiny random SAM; else a path or http(s) URL of a SAM checkpoint (.pth)
    sam_type: Literal["vit_h", "vit_l", "vit_b", "tiny"]  # architecture of that checkpoint (builtin: tiny)


class GenerateConfig(Section):
    weights: str  # ELITE weights folder used when --weights is not given
    lam: float = Field(ge=0)
    steps: int = Field(ge=1)
    guidance: float
    scheduler: Literal["lms", "dpm++", "ddim", "euler", "pndm"]
    seed: int
    allow_bare_s: bool  # also accept a standalone 'S' as the placeholder, as the authors' prompts do
    # two concepts (S1*, S2*): per_concept = Eq. 8 per concept (each local branch weighted by its own w0's
    # map); naive = the baseline (all local tokens in one branch, weighted by the sum of the w0 maps)
    multi_concept: Literal["per_concept", "naive"]

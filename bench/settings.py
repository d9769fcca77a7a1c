"""What the benchmark measures and how often: the full run (`make bench`) and the `--quick` run that
tests/bench uses to check that every figure's code path works (smoke sizes only, few repeats; its
numbers mean nothing).

These are measurement settings (sizes, repeats, caps), not pipeline hyperparameters: the models'
own settings come from the code that builds them (elite.smoke_models) or from the SD-v1 / CLIP
ViT-L/14 configurations named in bench/README.md, and the optimisation settings of the
Textual-Inversion figure and of the training figure come from params.yaml (smoke profile).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    mode: str
    # model sizes, run one after the other (each phase's models are built when it starts, so the peak RSS
    # of a phase holds only its models and the smoke ones): "smoke" (the smoke models) and "sd"
    # (SD-v1-sized UNet, 768-wide CLIP text encoder, ViT-L/14-sized CLIP tower, SD's VAE; random weights)
    sizes: tuple[str, ...]
    encode_repeats: int  # concept encode latency: median of this many calls (batch 1)
    sd_resolution: int  # pixels, SD-sized generation and training figures
    gen_steps: dict[str, int]  # sampling steps per generation, by size
    gen_rounds: dict[str, int]  # interleaved rounds (SD, ELITE lam 0, ELITE lam > 0), by size
    step_rounds: dict[str, int]  # interleaved rounds of single sampling steps, by size
    lam: float  # local-branch weight of the "lam > 0" runs (paper: 0.8 for generation prompts)
    guidance: float  # classifier-free guidance scale (paper: 5)
    ti_cap: int  # Textual-Inversion-style optimisation (smoke base): at most this many steps
    plateau_window: int  # moving-average window (steps) of the plateau rule
    plateau_rel: float  # plateau: the moving average improved by less than this share over one window
    train_rounds: dict[str, int]  # interleaved optimiser steps (with / without the latent cache), by size
    train_rows: dict[str, int]  # training images (one box each) the steps draw from, by size
    sam_model: dict[
        str, str
    ]  # SAM measured in each size's phase: "tiny" (the smoke SAM) or a SAM type (random weights)
    sam_images: dict[str, int]  # images per round, by SAM model
    sam_rounds: dict[str, int]
    device_memory_rows: int = 8  # training images the device_memory figure's steps draw from
    device_memory_steps: int = 3  # optimiser steps per option in the device_memory figure (the first builds state)
    sam_boxes: tuple[int, int] = (4, 6)  # [min, max] boxes per image (the issue: images with >= 4 boxes)
    prompt: str = "a photo of a S* on the beach"
    seed: int = 0


FULL = Settings(
    mode="full",
    sizes=("smoke", "sd"),
    encode_repeats=20,
    sd_resolution=256,
    gen_steps={"smoke": 10, "sd": 2},
    gen_rounds={"smoke": 7, "sd": 4},
    step_rounds={"smoke": 15, "sd": 4},
    lam=0.8,
    guidance=5.0,
    ti_cap=400,
    plateau_window=50,
    plateau_rel=0.01,
    train_rounds={"smoke": 10, "sd": 3},
    train_rows={"smoke": 8, "sd": 4},
    sam_model={"smoke": "tiny", "sd": "vit_b"},
    sam_images={"tiny": 8, "vit_b": 1},
    sam_rounds={"tiny": 5, "vit_b": 1},
    sam_boxes=(4, 4),  # the least the issue asks for: per box, SAM ViT-B runs its image encoder again (~17 s CPU)
)

QUICK = Settings(
    mode="quick",
    sizes=("smoke",),
    encode_repeats=3,
    sd_resolution=256,
    gen_steps={"smoke": 2},
    gen_rounds={"smoke": 2},
    step_rounds={"smoke": 2},
    lam=0.8,
    guidance=5.0,
    ti_cap=12,
    plateau_window=3,
    plateau_rel=0.01,
    train_rounds={"smoke": 2},
    train_rows={"smoke": 3},
    sam_model={"smoke": "tiny"},
    sam_images={"tiny": 2},
    sam_rounds={"tiny": 2},
    device_memory_rows=4,
    device_memory_steps=2,
)

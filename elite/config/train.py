"""params.yaml sections `train_global` (stage 1) and `train_local` (stage 2)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from elite.config.base import Section

Range = list[float]


def _range(value: list, low: float, high: float | None = None) -> list:
    if len(value) != 2 or value[0] < low or value[1] < value[0] or (high is not None and value[1] > high):
        upper = f" <= {high}" if high is not None else ""
        raise ValueError(f"must be [min, max] with {low} <= min <= max{upper}")
    return value


class TrainCommon(Section):
    """Keys shared by both training stages (each stage has its own copy in params.yaml)."""

    base: str  # Stable Diffusion folder (VAE, text encoder, tokenizer, UNet, scheduler)
    init: str  # ELITE weights to start from (they name the CLIP vision tower)
    manifest: str  # JSON Lines training manifest
    out: str  # trained weights folder
    metrics: str  # DVC metrics JSON
    plot: str  # per-step CSV (DVC plot)
    checkpoint_dir: str  # step-NNNNNNN/ checkpoints; a rerun resumes from the newest matching one
    seed: int = Field(ge=0)
    resolution: int = Field(ge=8, multiple_of=8)  # target image side (pixels)
    max_steps: int = Field(ge=1)  # optimiser steps
    batch_size: int = Field(ge=1)  # per process
    gradient_accumulation_steps: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    scale_lr: bool  # multiply learning_rate by batch_size * accumulation * processes (the authors' rule: --scale_lr)
    adam_beta1: float = Field(ge=0, lt=1)
    adam_beta2: float = Field(ge=0, lt=1)
    adam_weight_decay: float = Field(ge=0)
    adam_epsilon: float = Field(gt=0)
    max_grad_norm: float = Field(gt=0)
    mixed_precision: Literal["no", "fp16", "bf16"]
    optimizer: Literal["adamw", "adamw8bit"]  # adamw8bit: bitsandbytes' 8-bit AdamW (elite/train/memory.py)
    gradient_checkpointing: bool  # recompute the frozen UNet's activations in backward (less memory)
    reg_weight: float = Field(ge=0)  # stage 1: * mean|v|; stage 2: * mean over layers of mean|V_l|
    crop_pad: list[int]  # [min, max] pixels of padding around the box (clipped at the image border)
    num_workers: int = Field(ge=0)
    cpu_threads: int = Field(ge=0)  # torch threads when training on the CPU (0 = torch's default)
    repeat_randomness: bool  # true: each draw of a sample reuses its crop/augmentation/caption/noise/timestep
    checkpoint_every: int = Field(ge=1)
    keep_checkpoints: int = Field(ge=1)
    sample_every: int = Field(ge=0)  # 0 = no sample grids
    sample_prompt: str
    sample_steps: int = Field(ge=1)
    sample_guidance: float
    sample_subjects: str | None  # DreamBench subjects.json: its concept images are the grids' held-out concepts
    sample_masks: str  # their SAM masks (<subject>.png), used where present
    sample_count: int = Field(ge=1)  # concepts per grid (one row each)

    @field_validator("crop_pad")
    @classmethod
    def _pad(cls, value):
        return _range(value, 0)

    def effective_batch(self, num_processes: int) -> int:
        """Samples per optimiser step over all processes."""
        return self.batch_size * self.gradient_accumulation_steps * num_processes

    def effective_learning_rate(self, num_processes: int) -> float:
        """The optimiser's learning rate: with scale_lr, learning_rate times the effective batch (the
        authors' rule, so any process count gets their per-sample rate), else learning_rate itself."""
        return self.learning_rate * self.effective_batch(num_processes) if self.scale_lr else self.learning_rate


class TrainGlobalConfig(TrainCommon):
    """Stage 1: global mapper M^g + 16 global K/V pairs, L_LDM + reg_weight * mean|v| over all five words."""

    cache_latents: bool  # cache the VAE latent distributions of the (unaugmented) targets in cache_dir
    cache_dir: str
    clip_flip_p: float = Field(ge=0, le=1)
    clip_rotate_deg: float = Field(ge=0)
    clip_rotate_p: float = Field(ge=0, le=1)
    clip_blur_p: float = Field(ge=0, le=1)
    clip_blur_kernel: list[int]  # [min, max] side of the box-blur kernel (odd sizes in between)
    clip_elastic_p: float = Field(
        ge=0, le=1
    )  # albumentations 1.3.0 ElasticTransform: control-point affine + elastic field
    clip_elastic_affine: float = Field(ge=0)  # its alpha_affine: each of 3 control points moves U(-a, a) px in x and y
    clip_elastic_alpha: float = Field(
        ge=0
    )  # elastic field magnitude: uniform noise in [-1, 1] smoothed, times alpha (px)
    clip_elastic_sigma: float = Field(ge=1)  # Gaussian smoothing of that noise (px)
    word_dropout: float = Field(ge=0, le=1)  # share of samples with w0 alone at S*, as inference (authors: 0)

    @field_validator("clip_blur_kernel")
    @classmethod
    def _kernel(cls, value):
        return _range(value, 1)


class TrainLocalConfig(TrainCommon):
    """Stage 2: local mapper M^l + 16 local K/V pairs (global part frozen), masked L_LDM + reg on V_l, w0 only."""

    local_scale: float = Field(gt=0)  # lambda of Eq. 6 during training (paper: 1)
    crop_box: Literal["mask", "annotation"]  # crop around the mask's tight box (the authors') or the manifest's box
    sample_lam: float = Field(ge=0)
    shrink_p: float = Field(ge=0, le=1)  # share of targets whose side is drawn from shrink_scale (else enlarge_scale)
    shrink_scale: Range  # drawn side as a fraction of resolution (pasted below far_below, else the full frame)
    enlarge_scale: Range  # the others: enlarged by this factor, then randomly cropped back
    far_below: float = Field(
        gt=0
    )  # drawn side below this fraction of resolution -> pasted on a grey canvas + far prefix
    far_prefixes: list[str] = Field(min_length=1)
    near_prefixes: list[str] = Field(min_length=1)
    clip_crop_p: float = Field(ge=0, le=1)  # CLIP input of the masked object: enlarge then crop back
    clip_crop_scale: Range
    clip_rotate_deg: float = Field(ge=0)
    clip_rotate_p: float = Field(ge=0, le=1)
    clip_translate_px: float = Field(ge=0)  # in pixels of the CLIP input
    clip_translate_p: float = Field(ge=0, le=1)

    @field_validator("shrink_scale")
    @classmethod
    def _shrink(cls, value):
        return _range(value, 0.01, 1.0)

    @field_validator("enlarge_scale", "clip_crop_scale")
    @classmethod
    def _enlarge(cls, value):
        return _range(value, 1.0)


def check_inputs(cfg: TrainCommon, section: str) -> None:
    """Cheap checks before anything heavy is imported or loaded; each names the params key to fix."""
    from pathlib import Path

    from elite.errors import EliteError

    if not Path(cfg.manifest).is_file():
        raise EliteError(
            f"{cfg.manifest}: training manifest not found ({section}.manifest); run the stages before {section}"
        )
    if not (Path(cfg.base) / "unet").is_dir():
        raise EliteError(f"{cfg.base}: no Stable Diffusion folder here ({section}.base); run `elite prepare-models`")
    if not (Path(cfg.init) / "elite_config.json").is_file():
        hint = "run `elite prepare-models`" if section == "train_global" else "run `elite train-global` first"
        raise EliteError(f"{cfg.init}: no ELITE weights to start from ({section}.init); {hint}")
    if getattr(cfg, "cache_latents", False) and cfg.crop_pad[0] != cfg.crop_pad[1]:
        raise EliteError(f"{section}.cache_latents needs a fixed crop_pad [n, n] (cached targets are not augmented)")


class LaunchConfig(Section):
    """Section `launch`: how many processes the training stages run as (both stages, every profile's hardware).
    With processes > 1 `elite train-global` / `train-local` (the dvc.yaml commands) start themselves through
    `accelerate launch` (GPUs; gloo processes on a CPU machine); the effective batch and, with scale_lr, the
    learning rate follow the real number of processes (logged in the stages' metrics)."""

    processes: int = Field(ge=1)  # in all, over every machine (accelerate --num_processes)
    machines: int = Field(ge=1)  # > 1: run the stage on each machine with ELITE_MACHINE_RANK and ELITE_MAIN_PROCESS_IP
    main_process_port: int = Field(ge=0, le=65535)  # rendezvous port of process 0 (0 = a free one; one machine only)

"""params.yaml section `toy`: the toy world (profile toy) and the training of its stand-in models."""

from __future__ import annotations

from pydantic import Field

from elite.config.base import Section


class ToyConfig(Section):
    size: int = Field(ge=16)  # render side in pixels (the stand-ins' resolution)
    seed: int
    held_out: list[list[str]] = Field(min_length=1)  # [colour, pattern] identities kept out of ELITE's training
    name_held_out: bool  # may the base model's captions name the held-out identities?
    bank: int = Field(ge=64)  # renders each stand-in trains on
    two_object_share: float = Field(ge=0, le=1)  # share of two-object scenes in the base model's bank
    caption_modes: dict[str, float]  # identity naming in base captions: both / colour / pattern / none
    template_p: float = Field(ge=0, le=1)  # base captions: share written with a training template ("a photo of a ...")
    scene_p: float = Field(ge=0, le=1)  # share that name the scene
    caption_drop: float = Field(ge=0, le=1)  # empty captions (classifier-free guidance)
    vae_steps: int = Field(ge=1)
    clip_steps: int = Field(ge=1)
    unet_steps: int = Field(ge=1)
    unet_lr: float = Field(gt=0)
    unet_batch: int = Field(ge=1)
    probe_steps: int = Field(ge=1)
    sam_steps: int = Field(ge=1)
    dino_steps: int = Field(ge=1)
    threads: int = Field(ge=1)  # torch threads while training (1 is fastest when the cores are shared)

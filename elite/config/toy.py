"""params.yaml section `toy`: the toy world (profile toy) and the training of its stand-in models."""

from __future__ import annotations

from collections import Counter

from pydantic import Field, field_validator

from elite.config.base import Section


class ToyConfig(Section):
    size: int = Field(ge=16)  # render side in pixels (the stand-ins' resolution)
    seed: int
    # [class, colour, pattern] concepts ELITE is judged on; their (colour, pattern) identities are kept out of the
    # training of every model ELITE reads and of the probes (elite/toy/heldout.py)
    held_out: list[list[str]] = Field(min_length=2)
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
    unet_snr_gamma: float = Field(ge=0)  # min-SNR-gamma loss weights for the UNet (0 = plain MSE)
    unet_top_attention: bool  # cross-attention at the 16x16 level too (elite/toy/standins.build_unet)
    probe_steps: int = Field(ge=1)
    sam_steps: int = Field(ge=1)
    dino_steps: int = Field(ge=1)
    gate_guidance: list[float] = Field(min_length=1)  # the base gate's guidance sweep (best on seen concepts wins)
    gate_steps: int = Field(ge=1)  # the gate's sampling steps: the evaluation's (evaluate.toy.steps)
    gate_images: int = Field(ge=1)  # images per gate row
    threads: int = Field(ge=1)  # torch threads while training (1 is fastest when the cores are shared)

    @field_validator("held_out")
    @classmethod
    def _needs_every_attribute(cls, held_out: list[list[str]]) -> list[list[str]]:
        """A held-out set that one attribute could solve is refused: every held-out colour and every held-out
        pattern must occur in at least two held-out concepts."""
        if any(len(entry) != 3 for entry in held_out):
            raise ValueError("each entry is [class, colour, pattern]")
        if len({tuple(e) for e in held_out}) < len(held_out):
            raise ValueError("a concept is listed twice")
        for k, attr in ((1, "colour"), (2, "pattern")):
            alone = sorted(v for v, n in Counter(e[k] for e in held_out).items() if n < 2)
            if alone:
                raise ValueError(
                    f"{attr} {', '.join(alone)} occurs in one held-out concept only, so that {attr} alone would "
                    f"identify it; add a second concept with it"
                )
        return held_out

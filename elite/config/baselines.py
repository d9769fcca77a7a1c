"""params.yaml section `baselines`: Textual Inversion and Extended Textual Inversion (P+)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from elite.config.base import Section


class InversionConfig(Section):
    lr: float = Field(gt=0)
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    weight_decay: float = Field(ge=0)


class BaselinesConfig(Section):
    ti: InversionConfig
    xti: InversionConfig
    seed: int
    flip_p: float = Field(ge=0, le=1)  # horizontal flip probability of the concept image per draw
    subjects: list[str]  # DreamBench subjects the evaluation also inverts ([] = none)
    methods: list[Literal["ti", "xti"]]  # which baselines the evaluation runs

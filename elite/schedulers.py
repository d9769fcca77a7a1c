"""Sampler choice by name: a fresh scheduler built from the base model's scheduler config."""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from elite.errors import EliteError

SCHEDULERS = {
    "lms": (LMSDiscreteScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
}


def make_scheduler(name_or_scheduler: str | SchedulerMixin, base_config) -> SchedulerMixin:
    if isinstance(name_or_scheduler, SchedulerMixin):
        return name_or_scheduler.__class__.from_config(name_or_scheduler.config)
    if name_or_scheduler not in SCHEDULERS:
        raise EliteError(f"unknown scheduler {name_or_scheduler!r}; choose one of: {', '.join(SCHEDULERS)}")
    cls, overrides = SCHEDULERS[name_or_scheduler]
    return cls.from_config(base_config, **overrides)

"""Sampling settings: the sampler chosen by name (a fresh scheduler built from the base model's scheduler config),
and the one-line checks of a sampling call. Importing this module loads no model library (diffusers is imported
when a scheduler is built), so the command line checks its arguments before any model loads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from elite.errors import EliteError
from elite.models.local_control import Lam, check_lam, check_local_steps

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

SCHEDULERS = {  # name -> (diffusers scheduler class, config overrides)
    "lms": ("LMSDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
}


def make_scheduler(name_or_scheduler: str | SchedulerMixin, base_config) -> SchedulerMixin:
    import diffusers
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    if isinstance(name_or_scheduler, SchedulerMixin):
        return name_or_scheduler.__class__.from_config(name_or_scheduler.config)
    check_scheduler(name_or_scheduler)
    cls, overrides = SCHEDULERS[name_or_scheduler]
    return getattr(diffusers, cls).from_config(base_config, **overrides)


def check_scheduler(name: str) -> None:
    if name not in SCHEDULERS:
        raise EliteError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")


def check_sampling(
    lam: Lam,
    steps: int,
    guidance: float,
    num_images: int,
    scheduler: str | SchedulerMixin | None = None,
    local_steps: Sequence[float] = (0.0, 1.0),
) -> None:
    """One-line errors for sampling settings, cheap enough to run before any model is loaded."""
    if isinstance(scheduler, str):
        check_scheduler(scheduler)
    check_lam(lam)
    check_local_steps(local_steps)
    if not isinstance(steps, int) or steps < 1:
        raise EliteError(f"num_inference_steps must be an integer >= 1, got {steps}")
    if not math.isfinite(guidance):
        raise EliteError(f"guidance_scale must be finite, got {guidance}")
    if num_images < 1:
        raise EliteError(f"num_images_per_prompt must be >= 1, got {num_images}")

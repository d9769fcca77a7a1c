"""The training loop every small toy-world model shares: AdamW with a one-cycle learning rate."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

Progress = Callable[[int, float], None] | None


def fit(
    params: Iterable[torch.nn.Parameter],
    steps: int,
    step_loss: Callable[[], torch.Tensor],
    lr: float,
    weight_decay: float,
    pct_start: float = 0.3,
    progress: Progress = None,
) -> None:
    """`steps` optimiser steps on `step_loss()` (which draws its own batch); `progress(step, loss)` after each."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct_start)
    for step in range(steps):
        loss = step_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress:
            progress(step, loss.item())

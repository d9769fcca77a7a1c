"""Training that fits smaller cards: the optimiser (AdamW, or bitsandbytes' 8-bit AdamW where it is installed)
and gradient checkpointing of the frozen UNet. Both are params of each training stage (`optimizer`,
`gradient_checkpointing`); `mixed_precision` (bf16 / fp16) is the third lever. `make bench` measures the peak
memory of a stage-1 step with each (bench/figures_train.py, figure `memory`)."""

from __future__ import annotations

import torch

from elite.errors import EliteError


def make_optimizer(cfg, parameters: list[torch.nn.Parameter], lr: float, stage: str) -> torch.optim.Optimizer:
    """The stage's optimiser over `parameters`: torch's AdamW, or `adamw8bit` (bitsandbytes.optim.AdamW8bit:
    optimiser state in 8 bits, a quarter of AdamW's two fp32 moments)."""
    kwargs = dict(
        lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon
    )
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(parameters, **kwargs)
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise EliteError(
            f"{stage}.optimizer: adamw8bit needs bitsandbytes (pip install bitsandbytes), or set it to adamw"
        ) from None
    return bnb.optim.AdamW8bit(parameters, **kwargs)


def checkpoint_unet(unet, enabled: bool) -> None:
    """Recompute the UNet's activations in the backward pass instead of keeping them (less memory, about a
    third more compute); the UNet stays frozen, the gradient flows through it to ELITE's tokens."""
    if enabled:
        unet.enable_gradient_checkpointing()
    else:
        unet.disable_gradient_checkpointing()

"""Training losses: L_LDM (epsilon target), its masked form (stage 2) and the two regularisers."""

from __future__ import annotations

import torch


def ldm_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per element; with a (B, 1, h, w) mask, the mean over the masked elements of
    each sample (all channels of every masked cell), then the mean over the batch."""
    err = (pred.float() - target.float()) ** 2
    if mask is None:
        return err.mean()
    mask = mask.to(err.dtype).expand_as(err)
    return ((err * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1.0)).mean()


def word_regulariser(words: torch.Tensor) -> torch.Tensor:
    """Stage 1 (paper Eq. 4): mean |v| over all injected words."""
    return words.float().abs().mean()


def local_value_regulariser(local_kv, tokens: torch.Tensor) -> torch.Tensor:
    """Stage 2 (paper Eq. 7): mean over the cross-attention layers of mean |V_l| = |to_v^l(e)|. The same
    projections the attention processor applies (stateless), so this is exactly the values it uses."""
    values = [pair["to_v"](tokens).float().abs().mean() for pair in local_kv.layers.values()]
    return torch.stack(values).mean()

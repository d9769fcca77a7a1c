"""Training losses: L_LDM (epsilon or v target, as the base model's scheduler says), its masked form (stage 2)
and the two regularisers."""

from __future__ import annotations

import torch


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet predicts: the noise (Stable Diffusion v1, `epsilon`) or the velocity (`v_prediction`, the
    toy profile's base model)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    raise ValueError(f"unsupported prediction_type {kind!r} (epsilon or v_prediction)")


def ldm_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Squared error. Without a mask the mean over every element (stage 1, as the authors' train_global.py).
    With a (B, 1, h, w) loss mask, per sample the squared error summed over the masked cells and all latent
    channels, divided by the number of masked cells (the 1-channel mask's sum), then the mean over the
    batch: the authors' train_local.py normalisation, i.e. channels (4) times the per-element mean, which
    keeps their ratio of L_LDM to the 1e-4 regulariser. A sample whose mask is empty contributes 0."""
    err = (pred.float() - target.float()) ** 2
    if mask is None:
        return err.mean()
    mask = mask.to(err.dtype)
    return ((err * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1.0)).mean()


def word_regulariser(words: torch.Tensor) -> torch.Tensor:
    """Stage 1 (paper Eq. 4): mean |v| over all injected words."""
    return words.float().abs().mean()


def local_value_regulariser(local_kv, tokens: torch.Tensor) -> torch.Tensor:
    """Stage 2 (paper Eq. 7): mean over the cross-attention layers of mean |V_l| = |to_v^l(e)|. The same
    projections the attention processor applies (stateless), so this is exactly the values it uses."""
    values = [pair["to_v"](tokens).float().abs().mean() for pair in local_kv.layers.values()]
    return torch.stack(values).mean()

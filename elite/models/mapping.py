"""The global (M^g) and local (M^l) mapping networks of ELITE (paper Sec. 3.1, 3.2).

Both hold, for each of the selected CLIP layers, one MLP for the CLS token and one for the patch
tokens. The MLP layout (Linear, LayerNorm, LeakyReLU, Linear, LayerNorm, LeakyReLU, Linear) keeps the
authors' module indices 0..6, so their checkpoints map onto it key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mapping_mlp(vision_dim: int, text_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(vision_dim, vision_dim),
        nn.LayerNorm(vision_dim),
        nn.LeakyReLU(),
        nn.Linear(vision_dim, vision_dim),
        nn.LayerNorm(vision_dim),
        nn.LeakyReLU(),
        nn.Linear(vision_dim, text_dim),
    )


class _LayerwiseMapper(nn.Module):
    def __init__(self, vision_dim: int, text_dim: int, num_layers: int) -> None:
        super().__init__()
        self.cls_mlps = nn.ModuleList(mapping_mlp(vision_dim, text_dim) for _ in range(num_layers))
        self.patch_mlps = nn.ModuleList(mapping_mlp(vision_dim, text_dim) for _ in range(num_layers))

    def _check(self, hidden_states: list[torch.Tensor]) -> None:
        if len(hidden_states) != len(self.cls_mlps):
            raise ValueError(f"expected {len(self.cls_mlps)} CLIP layers, got {len(hidden_states)}")


class GlobalMapper(_LayerwiseMapper):
    """Maps multi-layer CLIP features to one word per layer: (B, num_layers, text_dim).

    word_i = mlp_i(CLS_i) + mean_p(patch_mlp_i(patch_i)): the MLP is applied to every patch first,
    then averaged. Word 0 (from the deepest layer) is the primary word w0.
    """

    def forward(self, hidden_states: list[torch.Tensor]) -> torch.Tensor:
        self._check(hidden_states)
        words = [
            cls_mlp(h[:, 0]) + patch_mlp(h[:, 1:]).mean(dim=1)
            for h, cls_mlp, patch_mlp in zip(hidden_states, self.cls_mlps, self.patch_mlps)
        ]
        return torch.stack(words, dim=1)


class LocalMapper(_LayerwiseMapper):
    """Maps the masked object's CLIP features to spatial tokens e: (B, P, text_dim).

    Per layer, the CLS projection is broadcast-added to every patch projection; the layers are
    averaged; tokens outside the object mask (downsampled to the patch grid, nearest) become zero.
    """

    def forward(self, hidden_states: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        self._check(hidden_states)
        per_layer = [
            cls_mlp(h[:, :1]) + patch_mlp(h[:, 1:])
            for h, cls_mlp, patch_mlp in zip(hidden_states, self.cls_mlps, self.patch_mlps)
        ]
        tokens = torch.stack(per_layer, dim=0).mean(dim=0)
        return tokens * patch_mask(mask, tokens.shape[1]).to(tokens.dtype)


def patch_mask(mask: torch.Tensor, num_patches: int) -> torch.Tensor:
    """(B, 1, H, W) or (B, H, W) mask in [0, 1] -> (B, P, 1) nearest-downsampled to the patch grid."""
    side = int(round(num_patches**0.5))
    if side * side != num_patches:
        raise ValueError(f"patch tokens ({num_patches}) do not form a square grid")
    if mask.dim() == 3:
        mask = mask[:, None]
    grid = F.interpolate(mask.float(), size=(side, side), mode="nearest")
    return grid.flatten(2).transpose(1, 2)

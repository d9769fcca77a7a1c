"""Multi-layer CLIP vision features (paper: layers [24, 4, 8, 12, 16] of ViT-L/14, in that order)."""

from __future__ import annotations

import torch
from transformers import CLIPVisionModel


def scaled_layers(layers: list[int], reference_depth: int, depth: int) -> list[int]:
    """Map layer indices chosen for a `reference_depth`-layer tower onto a `depth`-layer one.

    Relative positions are kept (24 -> depth, 12 -> depth/2, ...); every index stays in [1, depth].
    """
    return [min(depth, max(1, round(layer * depth / reference_depth))) for layer in layers]


@torch.no_grad()
def clip_layer_features(
    image_encoder: CLIPVisionModel, pixel_values: torch.Tensor, layers: list[int]
) -> list[torch.Tensor]:
    """Hidden states (B, 1+P, C) of the given layers; index k is the output of encoder layer k
    (so the deepest one is the last hidden state *before* the post-layernorm)."""
    out = image_encoder(pixel_values=pixel_values, output_hidden_states=True)
    return [out.hidden_states[k] for k in layers]

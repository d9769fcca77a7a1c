"""Encoded concepts: one image's words and local tokens, several images fused into one concept, and
the local-branch inputs of one or several concepts in one prompt (S1*, S2*).

Several images of one concept: the global words are averaged over the images and the local tokens of
all images (each masked by its own object mask) are concatenated, so the local branch attends over all
of them. One image gives that image's concept unchanged.

Several concepts in one prompt: `MULTI_CONCEPT` names how their local tokens enter the attention:
- "per_concept": one local branch per concept, weighted by the attention map of that concept's own w0
  (paper Eq. 8 per concept), so one concept's details do not go to the other's object;
- "naive": the baseline, all concepts' tokens in one local branch weighted by the sum of the w0 maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from elite.errors import EliteError

MULTI_CONCEPT = ("per_concept", "naive")


@dataclass
class Concept:
    """What `encode_concept` returns: all global words (w0 first) and the masked local tokens."""

    words: torch.Tensor  # (1, num_layers, D)
    local_tokens: torch.Tensor | None  # (1, P, D), P = patches x images; None for a global-only model
    # optional: a different word per UNet cross-attention layer (P+ space, Extended Textual Inversion),
    # keyed like KVProjections; when set it replaces w0 layer by layer
    layer_words: dict[str, torch.Tensor] | None = None
    # where it came from (saved with it, elite.concept_file): "images" / "masks", the SHA-256 of each image's
    # and mask's pixels (encode_concept), "image_weights" when weighted; a loaded concept adds "weights_sha256"
    # (of the ELITE weights that encoded it) and "file"
    provenance: dict[str, Any] | None = None
    # (1, P) added to the local branch's attention logits per token: log weights of a weighted several-image
    # concept (fuse_images); None = every token alike
    local_bias: torch.Tensor | None = None

    @property
    def w0(self) -> torch.Tensor:
        return self.words[:, :1]


def image_weights(weights: Sequence[float] | None, count: int, field: str = "weights") -> list[float] | None:
    """The weights of `count` images normalised to sum 1 (None: equal), or a one-line EliteError."""
    if weights is None:
        return None
    values = list(weights)
    if len(values) != count:
        raise EliteError(f"{field}: got {len(values)} weight(s) for {count} image(s); give one per image")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0 for w in values):
        raise EliteError(f"{field}: expected finite numbers >= 0, got {values}")
    total = float(sum(values))
    if total <= 0:
        raise EliteError(f"{field}: all zero; give at least one image a weight > 0")
    return [w / total for w in values]


def fuse_images(encoded: Sequence[Concept], weights: Sequence[float] | None = None) -> Concept:
    """One concept from the encodings of several images of it: mean of the words, local tokens concatenated.

    With `weights` (normalised; see `image_weights`): images of weight 0 are left out, the words are the
    weighted mean, and the local branch attends over the images' tokens in proportion to their weights (each
    image's tokens get log(w_i * k) added to their attention logits, k images kept: `local_bias`). Equal
    weights are the unweighted fusion exactly."""
    normalised = image_weights(weights, len(encoded))
    if normalised is not None:
        kept = [(c, w) for c, w in zip(encoded, normalised, strict=True) if w > 0]
        encoded, normalised = [c for c, _ in kept], [w for _, w in kept]
        if len(set(normalised)) == 1:
            normalised = None
    if len(encoded) == 1:
        return encoded[0]
    if normalised is None:
        words = torch.stack([c.words for c in encoded]).mean(dim=0)
    else:
        words = torch.stack([w * c.words for c, w in zip(encoded, normalised, strict=True)]).sum(dim=0)
    tokens = [c.local_tokens for c in encoded if c.local_tokens is not None]
    local = torch.cat(tokens, dim=1) if tokens else None
    bias = None
    if normalised is not None and tokens:
        k = len(tokens)
        bias = torch.cat(
            [t.new_full(t.shape[:2], math.log(w * k)) for t, w in zip(tokens, normalised, strict=True)], 1
        )
    sources = [c.provenance for c in encoded]
    provenance: dict[str, Any] | None = None
    if all(source is not None for source in sources):
        provenance = {key: [h for s in sources if s is not None for h in s[key]] for key in ("images", "masks")}
        if normalised is not None:
            provenance["image_weights"] = normalised
    return Concept(words=words, local_tokens=local, provenance=provenance, local_bias=bias)


def as_concepts(concept: Concept | Sequence[Concept]) -> list[Concept]:
    """The `concept` argument of the pipeline as a list: one Concept, or one per placeholder S1*, S2*, ..."""
    concepts = [concept] if isinstance(concept, Concept) else list(concept)
    if not concepts or not all(isinstance(c, Concept) for c in concepts):
        raise EliteError(
            "concept: pass a Concept (from encode_concept) or a list of them, one per placeholder S1*, S2*, ..."
        )
    if len(concepts) > 1 and any(c.layer_words is not None for c in concepts):
        raise EliteError("concepts with per-layer words (XTI) work one at a time; use one concept and S*")
    if len({c.local_tokens is None for c in concepts}) > 1:
        raise EliteError("concepts mix local tokens and global-only words; encode them all with the same ELITE model")
    return concepts


def check_multi_concept(mode: str) -> None:
    if mode not in MULTI_CONCEPT:
        raise EliteError(f"multi_concept must be one of {', '.join(MULTI_CONCEPT)}, got {mode!r}")


LocalTokens = torch.Tensor | tuple[torch.Tensor, ...]
LocalBias = torch.Tensor | tuple[torch.Tensor | None, ...]


def local_inputs(concepts: Sequence[Concept], mode: str) -> tuple[LocalTokens | None, LocalBias | None]:
    """The local tokens for EliteConditioning, and their attention-logit bias (weighted several-image concepts;
    else None): one concept's tokens; per concept, a tuple of each one's tokens (one branch each); naive, all
    tokens concatenated (one branch). None for global-only concepts."""
    check_multi_concept(mode)
    tokens = [c.local_tokens for c in concepts if c.local_tokens is not None]
    if len(tokens) < len(concepts):
        return None, None
    biases = [c.local_bias for c in concepts]
    if len(concepts) == 1:
        return tokens[0], biases[0]
    if all(b is None for b in biases):
        return (tuple(tokens) if mode == "per_concept" else torch.cat(tokens, dim=1)), None
    if mode == "per_concept":
        return tuple(tokens), tuple(biases)
    filled = [t.new_zeros(t.shape[:2]) if b is None else b for t, b in zip(tokens, biases, strict=True)]
    return torch.cat(tokens, dim=1), torch.cat(filled, dim=1)

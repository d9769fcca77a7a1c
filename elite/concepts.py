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
    # and mask's pixels (encode_concept); a loaded concept adds "weights_sha256" (of the ELITE weights that
    # encoded it) and "file"
    provenance: dict[str, Any] | None = None

    @property
    def w0(self) -> torch.Tensor:
        return self.words[:, :1]


def fuse_images(encoded: Sequence[Concept]) -> Concept:
    """One concept from the encodings of several images of it: mean of the words, local tokens concatenated."""
    if len(encoded) == 1:
        return encoded[0]
    words = torch.stack([c.words for c in encoded]).mean(dim=0)
    local = None if encoded[0].local_tokens is None else torch.cat([c.local_tokens for c in encoded], dim=1)
    sources = [c.provenance for c in encoded]
    provenance = None
    if all(sources):
        provenance = {key: [h for s in sources for h in s[key]] for key in ("images", "masks")}  # type: ignore[index]
    return Concept(words=words, local_tokens=local, provenance=provenance)


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


def local_inputs(concepts: Sequence[Concept], mode: str) -> torch.Tensor | tuple[torch.Tensor, ...] | None:
    """The local tokens for EliteConditioning: one concept's tokens; per concept, a tuple of each one's
    tokens (one branch each); naive, all tokens concatenated (one branch). None for global-only concepts."""
    check_multi_concept(mode)
    if concepts[0].local_tokens is None:
        return None
    if len(concepts) == 1:
        return concepts[0].local_tokens
    tokens = tuple(c.local_tokens for c in concepts)
    return tokens if mode == "per_concept" else torch.cat(tokens, dim=1)

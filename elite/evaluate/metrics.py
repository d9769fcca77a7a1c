"""CLIP-I, CLIP-T and DINO-I: embedding models and the pair averages.

- CLIP-I: cosine similarity of CLIP image embeddings (after CLIP's projection), generated vs real.
- CLIP-T: cosine similarity of a generated image's CLIP embedding and its prompt's text embedding, the
  prompt written with the class word instead of S* (as Textual Inversion's clip_eval, ViT-B/32).
- DINO-I: cosine similarity of DINO ViT-S/16 CLS features (last hidden state, token 0), generated vs real.
Both models are loaded with `from_pretrained` from the folders `prepare-models` fills.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from elite.errors import EliteError


def _load(what: str, source: str, loader, **kwargs):
    try:
        return loader(source, **kwargs)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EliteError(
            f"cannot load the {what} from {source!r} ({first[:200]}); run `elite prepare-models`"
        ) from None


def _features(out) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output is projected (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class _Embedder:
    """Batched, L2-normalised embeddings; subclasses give `_embed_pixels` (and `dim`)."""

    model: torch.nn.Module
    processor: object
    device: str
    batch: int
    dim: int

    def _batched(self, items: list, embed) -> torch.Tensor:
        out = [embed(items[i : i + self.batch]).float().cpu() for i in range(0, len(items), self.batch)]
        return F.normalize(torch.cat(out), dim=-1) if out else torch.empty(0, self.dim)

    @torch.no_grad()
    def images(self, images: list[Image.Image]) -> torch.Tensor:
        def embed(chunk):
            pixels = self.processor(images=[im.convert("RGB") for im in chunk], return_tensors="pt").pixel_values
            return self._embed_pixels(pixels.to(self.device))

        return self._batched(images, embed)

    def _embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ClipEmbedder(_Embedder):
    """CLIP image and text embeddings (after CLIP's projections), L2-normalised."""

    def __init__(self, path: str, device: str = "cpu", batch: int = 32) -> None:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        self.model = _load("CLIP metric model", path, CLIPModel.from_pretrained).eval().to(device)
        self.processor = _load("CLIP image processor", path, CLIPImageProcessor.from_pretrained)
        self.tokenizer = _load("CLIP tokenizer", path, AutoTokenizer.from_pretrained)
        self.device, self.batch, self.dim = device, batch, self.model.config.projection_dim

    def _embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        def embed(chunk):
            tok = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt").to(self.device)
            return _features(self.model.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask))

        return self._batched(texts, embed)


class DinoEmbedder(_Embedder):
    """DINO ViT CLS features (the last hidden state's token 0, after the final layer norm), L2-normalised."""

    def __init__(self, path: str, device: str = "cpu", batch: int = 32) -> None:
        from transformers import AutoImageProcessor, ViTModel

        self.model = (
            _load("DINO metric model", path, ViTModel.from_pretrained, add_pooling_layer=False).eval().to(device)
        )
        self.processor = _load("DINO image processor", path, AutoImageProcessor.from_pretrained)
        self.device, self.batch, self.dim = device, batch, self.model.config.hidden_size

    def _embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).last_hidden_state[:, 0]


# --- pair averages on L2-normalised embeddings ---------------------------------------------------------
def cosine_to_set(generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(N,) mean cosine of each generated embedding with every real embedding (CLIP-I / DINO-I per image)."""
    if len(real) == 0:
        raise ValueError("no real embeddings to compare with")
    return (generated @ real.T).mean(dim=1)


def mean_pair_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine over all (a_i, b_j) pairs; symmetric in a and b and independent of their order."""
    return float((a @ b.T).mean())


def mean_distinct_pair_cosine(a: torch.Tensor) -> float | None:
    """Mean cosine over all pairs (i, j), i != j, of one set (real-vs-real); None with fewer than two."""
    n = len(a)
    if n < 2:
        return None
    sims = a @ a.T
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


def paired_cosine(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """(N,) cosine of image i with text i (CLIP-T per image)."""
    return (images * texts).sum(dim=-1)


@dataclass
class Mean:
    """A weighted running mean: CLIP-I / DINO-I weight each image by its number of real pairs."""

    total: float = 0.0
    weight: float = 0.0

    def add(self, value: float | None, weight: float = 1.0) -> None:
        if value is not None:
            self.total += value * weight
            self.weight += weight

    @property
    def value(self) -> float | None:
        return self.total / self.weight if self.weight else None

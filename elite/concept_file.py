"""Saved concepts: encode an image once, generate from the file many times (`elite encode`, `load_concept`).

A concept file is a safetensors file: the tensors of the Concept (`words`, `local_tokens`, per-layer words
`layer_words.<layer>`, `local_bias` of a weighted several-image concept), and in its metadata the format, the
SHA-256 of the ELITE weights that encoded it, the SHA-256 of the pixels of each image and mask, and the
images' weights. Loading gives back the very tensors (generation from the
file equals generation from the concept encoded in place); a file from other ELITE weights is refused when it
is used (`check_weights`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from elite.concepts import Concept
from elite.errors import EliteError
from elite.io import atomic_file

if TYPE_CHECKING:
    from elite.models.elite_model import EliteModel

FORMAT = "elite-concept"
FORMAT_VERSION = "1"
TENSORS = ("words", "local_tokens", "local_bias")
LAYER_PREFIX = "layer_words."
MAKE = "make one with `elite encode IMAGE -o FILE.safetensors` (or save_concept)"


def pixels_sha256(image: Image.Image | None) -> str | None:
    """SHA-256 of an image's pixels (mode, size and bytes as decoded), so a re-saved file hashes the same."""
    if image is None:
        return None
    digest = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def save_concept(concept: Concept, path: str | os.PathLike, elite: EliteModel) -> Path:
    """Write `concept` (encoded with the ELITE weights `elite`) to `path`, atomically; returns the path."""
    path = Path(path)
    tensors = {name: getattr(concept, name) for name in TENSORS if getattr(concept, name) is not None}
    tensors |= {LAYER_PREFIX + key: word for key, word in (concept.layer_words or {}).items()}
    source = concept.provenance or {}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights_sha256": elite.fingerprint(),
        "images_sha256": json.dumps(source.get("images", [])),
        "masks_sha256": json.dumps(source.get("masks", [])),
        "image_weights": json.dumps(source.get("image_weights")),
        "global_crop": json.dumps(source.get("global_crop")),  # M^g's input: null = the whole image
    }
    with atomic_file(path, suffix=".safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return path


def load_concept(path: str | os.PathLike, label: str | None = None) -> Concept:
    """The concept saved at `path` (by `save_concept` / `elite encode`), or a one-line EliteError naming the file
    (`label` names it instead, e.g. a request field whose bytes were written to a temporary file)."""
    name = label or str(path)
    if not Path(path).is_file():
        raise EliteError(f"{name}: concept file not found; {MAKE}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = list(f.keys()) if meta.get("format") == FORMAT else []
            tensors = {key: f.get_tensor(key) for key in names}
    except (SafetensorError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise EliteError(f"{name}: not a safetensors file ({first}); {MAKE}") from None
    if meta.get("format") != FORMAT:
        raise EliteError(f"{name}: a safetensors file but not an ELITE concept (no concept metadata); {MAKE}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise EliteError(
            f"{name}: concept file format {meta.get('format_version')!r}, this version reads {FORMAT_VERSION!r}; "
            f"encode the image again with `elite encode`"
        )
    if "words" not in tensors or not meta.get("weights_sha256"):
        raise EliteError(f"{name}: concept file without its words or weights hash (damaged?); {MAKE}")
    layers = {key[len(LAYER_PREFIX) :]: t for key, t in tensors.items() if key.startswith(LAYER_PREFIX)}
    try:
        images, masks = json.loads(meta.get("images_sha256", "[]")), json.loads(meta.get("masks_sha256", "[]"))
        shares = json.loads(meta.get("image_weights", "null"))
        crop = json.loads(meta.get("global_crop", "null"))
    except json.JSONDecodeError:
        raise EliteError(f"{name}: damaged concept metadata (image hashes); {MAKE}") from None
    return Concept(
        words=tensors["words"],
        local_tokens=tensors.get("local_tokens"),
        layer_words=layers or None,
        local_bias=tensors.get("local_bias"),
        provenance={"images": images, "masks": masks, "image_weights": shares}
        | ({} if crop is None else {"global_crop": crop})
        | {"weights_sha256": meta["weights_sha256"], "file": name},
    )


def check_weights(concepts: Sequence[Concept], elite: EliteModel | None) -> None:
    """One-line error when a loaded concept was encoded by other ELITE weights than `elite` (the pipeline's)."""
    for concept in concepts:
        want = (concept.provenance or {}).get("weights_sha256")
        if want is None:
            continue
        name = concept.provenance.get("file", "concept") if concept.provenance else "concept"
        if elite is None:
            raise EliteError(
                f"{name}: an ELITE concept, but this pipeline has no ELITE weights; load the pipeline with the "
                f"weights that encoded it (elite_weights= / --weights)"
            )
        have = elite.fingerprint()
        if want != have:
            raise EliteError(
                f"{name}: encoded with other ELITE weights (sha256 {want[:12]}..., these are {have[:12]}...); "
                f"encode the image again with these weights (`elite encode IMAGE --weights DIR -o FILE`)"
            )

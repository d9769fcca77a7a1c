"""Images as request/response payloads: base64 (or raw bytes) in, base64 PNG out.

The same helpers serve the pyfunc model (decode request rows), downstream apps (encode their files,
decode the predictions) and the tests. `encode_concepts` / `decode_concepts` carry several concepts of
several images each (a version-2 request row's `concepts`); `decode_concept` reads a concept file's bytes
(the `concept` column).
"""

from __future__ import annotations

import base64
import binascii
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from elite.concept_file import load_concept
from elite.concepts import Concept
from elite.errors import EliteError
from elite.images import binary_mask, decode, to_rgb


def encode_file(path: str | Path) -> str:
    """The bytes of an image file as base64 text (what a request row's `image`/`mask` holds)."""
    path = Path(path)
    if not path.is_file():
        raise EliteError(f"{path}: file not found")
    return base64.b64encode(path.read_bytes()).decode("ascii")


def encode_png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def payload_bytes(value: str | bytes, field: str) -> bytes:
    """Raw bytes from base64 text (a `data:...;base64,` prefix is allowed) or from bytes as they are."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if not isinstance(value, str):
        raise EliteError(f"{field}: expected base64 text or bytes, got {type(value).__name__}")
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise EliteError(f"{field}: not valid base64 (send the image file's bytes base64-encoded)") from None


def decode_image(value: str | bytes, field: str = "image") -> Image.Image:
    """An RGB image (EXIF orientation applied) from a payload, or a one-line EliteError (elite.images.decode)."""
    data = payload_bytes(value, field)
    if not data:
        raise EliteError(f"{field}: empty image")
    return to_rgb(decode(data, field))


def decode_mask(value: str | bytes, size: tuple[int, int], field: str = "mask") -> Image.Image:
    """A binary 'L' mask (255 = object) of `size`, thresholded like `elite.images.open_mask`."""
    data = payload_bytes(value, field)
    if not data:
        raise EliteError(f"{field}: empty mask")
    mask = binary_mask(decode(data, field, "mask image"))
    if mask.size != size:
        mask = mask.resize(size, Image.NEAREST)
    if not np.asarray(mask).any():
        raise EliteError(f"{field}: mask is all black (no object); white marks the object")
    return mask


def decode_concept(value: str | bytes, field: str = "concept") -> Concept:
    """A concept from the bytes of a concept file (`elite encode`), or a one-line EliteError naming `field`."""
    data = payload_bytes(value, field)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "concept.safetensors"
        path.write_bytes(data)
        return load_concept(path, label=field)


def decode_png(value: str) -> Image.Image:
    """A prediction (base64 PNG) as a PIL image."""
    img = Image.open(io.BytesIO(payload_bytes(value, "prediction")))
    img.load()
    return img


def encode_concepts(concepts: Sequence[Sequence[str | Path | tuple[str | Path, str | Path | None]]]) -> list[dict]:
    """A version-2 row's `concepts` from files: one list per concept of image paths or (image, mask) pairs."""
    out = []
    for concept in concepts:
        pairs = [item if isinstance(item, tuple) else (item, None) for item in concept]
        out.append(
            {
                "images": [encode_file(image) for image, _ in pairs],
                "masks": [None if mask is None else encode_file(mask) for _, mask in pairs],
            }
        )
    return out


def decode_concepts(value: Any, field: str = "concepts") -> list[tuple[list[Image.Image], list[Image.Image | None]]]:
    """Per concept its images and masks (None: the whole image) from a list of
    `{"images": [base64, ...], "masks": [base64 or null, ...]}` (`masks` optional), or a one-line EliteError."""
    form = 'a list with one {"images": [base64, ...], "masks": [base64 or null, ...]} per concept'
    concepts = _as_list(value)
    if not concepts:
        raise EliteError(f"{field}: expected {form}")
    decoded = []
    for c, concept in enumerate(concepts):
        name = f"{field}[{c}]"
        if not isinstance(concept, dict) or set(concept) - {"images", "masks"}:
            raise EliteError(
                f'{name}: expected {{"images": [...], "masks": [...]}} (masks optional), got {type(concept).__name__}'
            )
        images = _as_list(concept.get("images"))
        if not images:
            raise EliteError(f"{name}.images: expected a list of one or more images (base64)")
        masks = _as_list(concept.get("masks")) if concept.get("masks") is not None else [None] * len(images)
        if masks is None or len(masks) != len(images):
            raise EliteError(f"{name}.masks: expected one mask (or null) per image, {len(images)} in all")
        pics = [decode_image(image, f"{name}.images[{i}]") for i, image in enumerate(images)]
        decoded.append(
            (
                pics,
                [
                    None if m is None else decode_mask(m, pic.size, f"{name}.masks[{i}]")
                    for i, (pic, m) in enumerate(zip(pics, masks))
                ],
            )
        )
    return decoded


def _as_list(value: Any) -> list | None:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return list(value) if isinstance(value, (list, tuple)) else None

"""Loading and checking concept images and masks (white = object): files and PIL images only, no torch, so a bad
input is refused before any model library loads (the tensors the models read: elite.pixels)."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from elite.errors import EliteError

MAX_PIXELS = 100_000_000  # larger images are refused from their header, before decoding (decompression bombs)
MASK_THRESHOLD = 128  # mask pixels >= this (0..255 scale, any channel mean) count as object


def decode(source: Path | bytes, name: str, what: str = "image") -> Image.Image:
    """An image file (or a file's bytes, e.g. from a request) decoded, EXIF orientation applied, or a one-line
    EliteError that starts with `name`.

    The size is checked from the header before any pixel is decoded. MAX_PIXELS is the one limit: PIL's
    own decompression-bomb warning (from ~89 MP) is silenced and its error (from ~179 MP) reported like
    ours. An untrusted file can break a decoder in many ways, so every decoder failure is one line too.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise EliteError(
                        f"{name}: {what} is {img.width}x{img.height}, over the {MAX_PIXELS:,}-pixel "
                        f"limit; downscale it first"
                    )
                img.load()
                return ImageOps.exif_transpose(img)  # a new image, usable after the file is closed
    except EliteError:
        raise
    except Image.DecompressionBombError as exc:
        raise EliteError(
            f"{name}: {what} is over the {MAX_PIXELS:,}-pixel limit ({exc}); downscale it first"
        ) from None
    except UnidentifiedImageError:
        raise EliteError(f"{name}: not a readable {what} (not an image format PIL knows)") from None
    except Exception as exc:  # noqa: BLE001 - see the docstring
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise EliteError(f"{name}: not a readable {what} ({type(exc).__name__}: {detail})") from None


def binary_mask(img: Image.Image) -> Image.Image:
    """'L' 0/255: object (255) where the mean of the channels is >= MASK_THRESHOLD (transparent = background)."""
    level = np.asarray(img, np.float32) if img.mode == "L" else np.asarray(to_rgb(img), np.float32).mean(axis=2)
    return Image.fromarray(np.where(level >= MASK_THRESHOLD, 255, 0).astype(np.uint8), mode="L")


def binary_mask_at(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`binary_mask`, resized (nearest) to (width, height) when it has another size."""
    mask = binary_mask(mask)
    return mask if mask.size == size else mask.resize(size, Image.Resampling.NEAREST)


def open_image(path: str | Path) -> Image.Image:
    """An RGB image with EXIF orientation applied, or a one-line EliteError."""
    path = Path(path)
    if not path.is_file():
        raise EliteError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise EliteError(f"{path}: image file is empty")
    return to_rgb(decode(path, str(path)))


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB of any PIL mode: 16-bit grayscale keeps its top 8 bits (as viewers show it), transparent pixels
    become black (the background of ELITE's masked image), CMYK / palette / grayscale are converted."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64).clip(0, 65535) / 257.0
        img = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (0, 0, 0))
        canvas.paste(rgba, mask=rgba.split()[3])
        return canvas
    return img.convert("RGB")


def open_mask(path: str | Path, size: tuple[int, int]) -> Image.Image:
    """A binary 'L' mask (255 = object) of the given (width, height).

    RGB masks (the authors' 0/255 `_bg.png`) and single-channel masks both work; pixels whose
    channel mean is >= 128 are object. A mask of another size is resized (nearest) with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise EliteError(f"{path}: mask file not found")
    if path.stat().st_size == 0:
        raise EliteError(f"{path}: mask file is empty")
    mask = binary_mask(decode(path, str(path), "mask image"))
    if mask.size != size:
        warnings.warn(
            f"{path}: mask is {mask.size[0]}x{mask.size[1]}, image is {size[0]}x{size[1]}; resized (nearest)",
            stacklevel=2,
        )
        mask = mask.resize(size, Image.NEAREST)
    if not np.asarray(mask).any():
        raise EliteError(f"{path}: mask is all black (no object); white marks the object")
    return mask


def full_mask(image: Image.Image) -> Image.Image:
    return Image.new("L", image.size, 255)


def padded_box(box, size: tuple[int, int], pad: int) -> tuple[int, int, int, int]:
    """Pixel box [x0, y0, x1, y1] grown by `pad` on every side and clipped to the image (width, height)."""
    w, h = size
    x0, y0, x1, y1 = box
    left, top = max(0, math.floor(x0) - pad), max(0, math.floor(y0) - pad)
    right, bottom = min(w, math.ceil(x1) + pad), min(h, math.ceil(y1) + pad)
    return left, top, max(right, left + 1), max(bottom, top + 1)


def mask_box(mask: Image.Image) -> tuple[int, int, int, int]:
    """The tight box [x0, y0, x1, y1] of a binary mask's object pixels, as the authors' cal_bbox_by_seg.py:
    x1 / y1 are the last object column / row (so a crop to x1 + pad ends pad - 1 px past the object), and a
    side of odd length grows by one pixel (at the far end when it fits, else at the near end)."""
    arr = np.asarray(mask)
    ys, xs = np.nonzero(arr)
    h, w = arr.shape[:2]
    box = []
    for lo, hi, limit in ((int(xs.min()), int(xs.max()), w), (int(ys.min()), int(ys.max()), h)):
        if (hi - lo) % 2 and hi + 1 <= limit:
            hi += 1
        if (hi - lo) % 2 and lo - 1 >= 0:
            lo -= 1
        box.append((lo, hi))
    return box[0][0], box[1][0], box[0][1], box[1][1]

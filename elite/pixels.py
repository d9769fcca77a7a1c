"""Images as the models read them: CLIP inputs (whole image, masked object, mask) and pixels in [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from elite.images import MASK_THRESHOLD, binary_mask_at


def clip_pixels(image: Image.Image, size: int) -> torch.Tensor:
    """The CLIP input before normalisation: (3, size, size) in [0, 1], the whole image resized to the square
    without a crop (so that image and mask stay aligned) with PIL's bicubic filter, which widens with the
    downscale factor (antialiased: a 4 MP photo is averaged, not sampled). Training and inference both use
    this one function, so the encoder sees the same kind of input in both."""
    small = image.convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def masked_clip_pixels(
    image: Image.Image, mask: Image.Image, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(whole image, masked object, mask) for the CLIP tower, unnormalised: the object is cut out at the
    image's full resolution (background black, as the authors' image * mask) and then resized like the whole
    image; the mask (binarised with MASK_THRESHOLD) is resized nearest. Shapes (3, S, S), (3, S, S), (1, S, S)."""
    mask = binary_mask_at(mask, image.size)
    obj = Image.composite(image.convert("RGB"), Image.new("RGB", image.size), mask)
    small = np.asarray(mask.resize((size, size), Image.NEAREST)) >= MASK_THRESHOLD
    return clip_pixels(image, size), clip_pixels(obj, size), torch.from_numpy(small.astype(np.float32))[None]


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel of a (..., C, H, W) tensor."""
    mean_t = torch.tensor(mean, dtype=x.dtype)[:, None, None]
    return (x - mean_t) / torch.tensor(std, dtype=x.dtype)[:, None, None]


def clip_inputs(
    image: Image.Image, mask: Image.Image, size: int, mean, std
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-of-one CLIP inputs for inference (`masked_clip_pixels`, normalised): pixel_values of the whole
    image (1, 3, S, S), of the masked object on black (1, 3, S, S), and the mask (1, 1, S, S) in {0, 1}."""
    full, obj, m = masked_clip_pixels(image, mask, size)
    return normalize(full, mean, std)[None], normalize(obj, mean, std)[None], m[None]


def signed_pixels(pixels) -> torch.Tensor:
    """uint8 RGB pixels (H, W, 3) or (N, H, W, 3) (an array or a PIL image) -> float32 (3, H, W) or
    (N, 3, H, W) in [-1, 1], the range the VAE and the toy probes read."""
    return torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 127.5 - 1).movedim(-1, -3)

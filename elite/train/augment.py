"""Crops and augmentations of the training samples. Every random choice comes from the `rng` passed in
(a numpy Generator seeded per draw), so a sample is a pure function of its draw number: a resumed run
sees exactly the batches an uninterrupted run would have seen.

Stage 1: the box padded by crop_pad px (clipped at the border) is the target (not augmented, so its
VAE latents can be cached); its CLIP input is flipped, rotated, blurred and elastically deformed.
Stage 2: the target gets the scale augmentation of Custom Diffusion (shrunk and pasted on black with
the loss only inside the pasted area, or enlarged and cropped) and a caption prefix; the masked
object's CLIP input is resized-and-cropped, rotated and translated together with its mask.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

BICUBIC, BILINEAR, NEAREST = InterpolationMode.BICUBIC, InterpolationMode.BILINEAR, InterpolationMode.NEAREST


def to_tensor01(img: Image.Image) -> torch.Tensor:
    """PIL RGB or L -> (C, H, W) float in [0, 1]."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def padded_box(box, size: tuple[int, int], pad: int) -> tuple[int, int, int, int]:
    """Pixel box [x0, y0, x1, y1] grown by `pad` on every side and clipped to the image (width, height)."""
    w, h = size
    x0, y0, x1, y1 = box
    left, top = max(0, math.floor(x0) - pad), max(0, math.floor(y0) - pad)
    right, bottom = min(w, math.ceil(x1) + pad), min(h, math.ceil(y1) + pad)
    return left, top, max(right, left + 1), max(bottom, top + 1)


def target_tensor(img: Image.Image, resolution: int) -> torch.Tensor:
    """The diffusion target: resized to resolution x resolution (bicubic), values in [-1, 1]."""
    return to_tensor01(img.convert("RGB").resize((resolution, resolution), Image.BICUBIC)) * 2 - 1


def clip_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """CLIP input before normalisation: size x size, [0, 1] (the whole crop, no centre crop)."""
    return to_tensor01(img.convert("RGB").resize((size, size), Image.BICUBIC)).clamp(0, 1)


def mask_tensor(mask: Image.Image, size: int) -> torch.Tensor:
    """(1, size, size) in {0, 1} from a binary 'L' mask (nearest)."""
    return (to_tensor01(mask.convert("L").resize((size, size), Image.NEAREST)) >= 0.5).float()


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean, dtype=x.dtype)[:, None, None]) / torch.tensor(std, dtype=x.dtype)[:, None, None]


def box_blur(x: torch.Tensor, kernel: int) -> torch.Tensor:
    if kernel <= 1:
        return x
    half = kernel // 2
    padded = F.pad(x[None], (half, half, half, half), mode="replicate")
    return F.avg_pool2d(padded, kernel, stride=1)[0]


def elastic(x: torch.Tensor, rng: np.random.Generator, alpha: float, sigma: float) -> torch.Tensor:
    """Elastic deformation with a smooth random displacement field (torchvision's parameterisation)."""
    _, h, w = x.shape
    field = torch.from_numpy(rng.uniform(-1, 1, size=(2, 1, h, w)).astype(np.float32))
    k = int(8 * sigma + 1) | 1
    field = TF.gaussian_blur(field, [k, k], [sigma, sigma])
    displacement = torch.stack([field[0, 0] * alpha / w, field[1, 0] * alpha / h], dim=-1)[None]
    return TF.elastic_transform(x, displacement, interpolation=BILINEAR)


def global_clip_augment(x: torch.Tensor, rng: np.random.Generator, cfg) -> torch.Tensor:
    """Stage-1 CLIP input (3, S, S) in [0, 1]: flip, rotate, box blur, elastic (each with its probability)."""
    if rng.random() < cfg.clip_flip_p:
        x = TF.horizontal_flip(x)
    if rng.random() < cfg.clip_rotate_p:
        x = TF.rotate(x, float(rng.uniform(-cfg.clip_rotate_deg, cfg.clip_rotate_deg)), interpolation=BILINEAR)
    if rng.random() < cfg.clip_blur_p:
        lo, hi = cfg.clip_blur_kernel
        sizes = [k for k in range(lo, hi + 1) if k % 2] or [lo]
        x = box_blur(x, int(rng.choice(sizes)))
    if rng.random() < cfg.clip_elastic_p:
        x = elastic(x, rng, cfg.clip_elastic_alpha, cfg.clip_elastic_sigma)
    return x.clamp(0, 1)


def local_clip_augment(x: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator, cfg):
    """Stage-2 masked-object CLIP input and its mask, transformed together (mask nearest, stays binary):
    enlarge by clip_crop_scale and crop back at a random place, rotate, translate."""
    size = x.shape[-1]
    if rng.random() < cfg.clip_crop_p:
        big = int(round(size * rng.uniform(*cfg.clip_crop_scale)))
        if big > size:
            top, left = int(rng.integers(0, big - size + 1)), int(rng.integers(0, big - size + 1))
            x = TF.crop(TF.resize(x, [big, big], interpolation=BICUBIC), top, left, size, size)
            mask = TF.crop(TF.resize(mask, [big, big], interpolation=NEAREST), top, left, size, size)
    if rng.random() < cfg.clip_rotate_p:
        angle = float(rng.uniform(-cfg.clip_rotate_deg, cfg.clip_rotate_deg))
        x, mask = TF.rotate(x, angle, interpolation=BILINEAR), TF.rotate(mask, angle, interpolation=NEAREST)
    if rng.random() < cfg.clip_translate_p:
        shift = [int(round(rng.uniform(-cfg.clip_translate_px, cfg.clip_translate_px))) for _ in range(2)]
        x = TF.affine(x, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=BILINEAR)
        mask = TF.affine(mask, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=NEAREST)
    mask = (mask >= 0.5).float()
    return x.clamp(0, 1) * mask, mask


def scale_augment(img: Image.Image, resolution: int, latent_factor: int, rng: np.random.Generator, cfg):
    """Stage-2 target with Custom Diffusion's scale augmentation.

    With probability shrink_p the crop is shrunk to a side in shrink_scale * resolution and pasted at a
    random place on a black canvas; the loss mask covers the latent cells entirely inside the pasted
    square, and sides below far_below * resolution get a far prefix ("a far away", "very small").
    Otherwise it is enlarged by enlarge_scale and randomly cropped back (near prefix, "zoomed in"), loss
    everywhere. Returns (target (3, R, R) in [-1, 1], loss mask (1, R/f, R/f), prefix or None).
    """
    cells = resolution // latent_factor
    if rng.random() < cfg.shrink_p:
        lo, hi = (int(round(s * resolution)) for s in cfg.shrink_scale)
        side = min(resolution, max(latent_factor * 2, int(rng.integers(lo, hi + 1))))
        x0, y0 = int(rng.integers(0, resolution - side + 1)), int(rng.integers(0, resolution - side + 1))
        canvas = torch.full((3, resolution, resolution), -1.0)
        canvas[:, y0 : y0 + side, x0 : x0 + side] = target_tensor(img, side)
        mask = torch.zeros(1, cells, cells)
        c0x, c0y = -(-x0 // latent_factor), -(-y0 // latent_factor)  # first cell fully inside
        c1x, c1y = (x0 + side) // latent_factor, (y0 + side) // latent_factor  # one past the last
        mask[:, c0y:c1y, c0x:c1x] = 1.0
        prefix = str(rng.choice(cfg.far_prefixes)) if side < cfg.far_below * resolution else None
        return canvas, mask, prefix
    side = max(resolution, int(round(rng.uniform(*cfg.enlarge_scale) * resolution)))
    top, left = int(rng.integers(0, side - resolution + 1)), int(rng.integers(0, side - resolution + 1))
    big = target_tensor(img, side)
    return big[:, top : top + resolution, left : left + resolution], torch.ones(1, cells, cells), str(rng.choice(cfg.near_prefixes))

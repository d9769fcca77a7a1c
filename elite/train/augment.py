"""Crops and augmentations of the training samples. Every random choice comes from the `rng` passed in
(a numpy Generator seeded per draw), so a sample is a pure function of its draw number: a resumed run
sees exactly the batches an uninterrupted run would have seen.

Stage 1: the box padded by crop_pad px (clipped at the border) is the target (not augmented, so its
VAE latents can be cached); its CLIP input gets the authors' albumentations pipeline (flip, rotate,
blur, and albumentations 1.3.0's ElasticTransform, which with its defaults is an affine jitter of three
control points plus a negligible elastic field), run by albumentations 2.x.
Stage 2: the target gets the authors' scale augmentation (`scale_augment`, from their datasets.py,
itself from Custom Diffusion); the masked object's CLIP input is resized-and-cropped, rotated and
translated together with its mask, with OpenCV as they do (`local_clip_augment`).
"""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.augmentations.geometric import functional as AF
from PIL import Image

from elite.pixels import signed_pixels

REFLECT_101 = cv2.BORDER_REFLECT_101  # albumentations 1.3.0's border for Rotate and ElasticTransform ("dcb|abcd")


def target_tensor(img: Image.Image, resolution: int) -> torch.Tensor:
    """The diffusion target: resized to resolution x resolution (bicubic), values in [-1, 1]."""
    return signed_pixels(img.convert("RGB").resize((resolution, resolution), Image.BICUBIC))


def affine_control_points(height: int, width: int) -> np.ndarray:
    """The three control points of albumentations 1.3.0's ElasticTransform: the centre plus (s, s), (s, -s)
    and (-s, -s) with s = a third of the shorter side, as (x, y) float32 rows."""
    centre = np.array((width // 2, height // 2), dtype=np.float32)
    s = min(height, width) // 3
    return np.stack([centre + (s, s), centre + (s, -s), centre - (s, s)]).astype(np.float32)


class ControlPointAffine(A.ImageOnlyTransform):
    """The affine step of albumentations 1.3.0's ElasticTransform (`alpha_affine`, removed in 1.4): every
    control point moves by U(-jitter, jitter) px in x and y and the image is warped by the affine map between
    the two triangles (albumentations' warp_affine: bilinear, reflect-101 borders). With jitter 50 on a 224 px
    input the four linear coefficients move by up to +-0.68 (triangular, std 0.28): scale, shear and
    rotation jitter plus a shift of up to 50 px. The applied offsets are kept in `params["offsets"]`."""

    def __init__(self, jitter: float, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.jitter = float(jitter)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("jitter",)

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        src = affine_control_points(*params["shape"][:2])
        offsets = self.random_generator.uniform(-self.jitter, self.jitter, size=src.shape).astype(np.float32)
        return {"matrix": cv2.getAffineTransform(src, src + offsets), "offsets": offsets}

    def apply(self, img: np.ndarray, matrix: np.ndarray, **params) -> np.ndarray:
        return AF.warp_affine(img, np.vstack([matrix, [0, 0, 1]]), cv2.INTER_LINEAR, 0, REFLECT_101, img.shape[:2])


def global_clip_pipeline(cfg) -> A.Compose:
    """Stage-1 CLIP-input augmentation with the authors' parameters (their datasets.py, albumentations 1.3.0:
    HorizontalFlip(0.5), Rotate(limit=20) p 0.5, Blur(p=0.3) kernel 3-7, ElasticTransform(p=0.3) with its
    defaults alpha 1, sigma 50, alpha_affine 50); borders reflect-101 as 1.3.0's defaults (2.x defaults to
    black). The elastic field is uniform noise in [-1, 1] smoothed with sigma 50, times alpha 1: well under a
    pixel, as in 1.3.0; the visible part is the control-point affine before it."""
    return A.Compose(
        [
            A.HorizontalFlip(p=cfg.clip_flip_p),
            A.Rotate(
                limit=cfg.clip_rotate_deg, interpolation=cv2.INTER_LINEAR, border_mode=REFLECT_101, p=cfg.clip_rotate_p
            ),
            A.Blur(blur_limit=tuple(cfg.clip_blur_kernel), p=cfg.clip_blur_p),
            A.Sequential(
                [
                    ControlPointAffine(cfg.clip_elastic_affine),
                    A.ElasticTransform(
                        alpha=cfg.clip_elastic_alpha,
                        sigma=cfg.clip_elastic_sigma,
                        interpolation=cv2.INTER_LINEAR,
                        noise_distribution="uniform",
                        border_mode=REFLECT_101,
                        p=1.0,
                    ),
                ],
                p=cfg.clip_elastic_p,
            ),
        ],
        save_applied_params=True,
    )


def global_clip_augment(x: torch.Tensor, rng: np.random.Generator, pipeline: A.Compose) -> tuple[torch.Tensor, list]:
    """Stage-1 CLIP input (3, S, S) in [0, 1] through `global_clip_pipeline`, its random choices drawn from
    `rng`. Returns the augmented input and the applied transforms (name, params) in order."""
    pipeline.set_random_state(rng, random.Random(int(rng.integers(2**63))))
    out = pipeline(image=np.ascontiguousarray(x.permute(1, 2, 0).numpy(), dtype=np.float32))
    return torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1).clamp(0, 1), out["applied_transforms"]


def local_clip_augment(x: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator, cfg):
    """Stage-2 masked-object CLIP input (3, S, S) in [0, 1] and its mask (1, S, S), warped together with
    OpenCV as the authors' `aug_cv2` (datasets.py), each step with its probability and integer draws:
    resize to n x n, n in S * clip_crop_scale (224-256), and crop S x S at a uniform place; rotate by an angle
    in [-clip_rotate_deg, clip_rotate_deg] degrees about (S/2, S/2); shift by (dx, dy) in
    [-clip_translate_px, clip_translate_px]. Image bicubic, mask nearest, black outside. The object is then
    multiplied by the moved mask (so nothing outside it reaches the local mapper).
    Returns (object, mask, applied): applied = {"crop": (n, top, left), "rotate": angle, "translate": (dx, dy)}
    for the steps taken."""
    img = np.ascontiguousarray(x.permute(1, 2, 0).numpy(), dtype=np.float32)
    m = np.ascontiguousarray(mask[0].numpy(), dtype=np.float32)
    size = img.shape[0]
    applied: dict = {}

    def warp(matrix: np.ndarray) -> None:
        nonlocal img, m
        img = cv2.warpAffine(img, matrix, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)
        m = cv2.warpAffine(m, matrix, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)

    if rng.random() < cfg.clip_crop_p:
        lo, hi = (int(round(size * f)) for f in cfg.clip_crop_scale)
        n = int(rng.integers(lo, hi + 1))
        top, left = (int(rng.integers(0, n - size + 1)) for _ in range(2))
        img = cv2.resize(img, (n, n), interpolation=cv2.INTER_CUBIC)[top : top + size, left : left + size]
        m = cv2.resize(m, (n, n), interpolation=cv2.INTER_NEAREST)[top : top + size, left : left + size]
        applied["crop"] = (n, top, left)
    if rng.random() < cfg.clip_rotate_p:
        limit = int(round(cfg.clip_rotate_deg))
        angle = int(rng.integers(-limit, limit + 1))
        warp(cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0))
        applied["rotate"] = angle
    if rng.random() < cfg.clip_translate_p:
        limit = int(round(cfg.clip_translate_px))
        dx, dy = (int(rng.integers(-limit, limit + 1)) for _ in range(2))
        warp(np.float32([[1, 0, dx], [0, 1, dy]]))
        applied["translate"] = (dx, dy)
    m_t = torch.from_numpy((m >= 0.5).astype(np.float32))[None]
    obj = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).clamp(0, 1) * m_t
    return obj, m_t, applied


def scale_sides(resolution: int, cfg) -> tuple[tuple[int, int], tuple[int, int]]:
    """The integer ranges [low, high) of the drawn side, as the authors' numpy randint calls: shrink
    [R//3, R] (shrink_scale [1/3, 1]) and enlarge [int(1.2 R), int(1.4 R)) (enlarge_scale [1.2, 1.4])."""
    lo, hi = cfg.shrink_scale
    big_lo, big_hi = cfg.enlarge_scale
    return (
        (int(lo * resolution), int(hi * resolution) + 1),
        (int(big_lo * resolution), max(int(big_lo * resolution) + 1, int(big_hi * resolution))),
    )


def scale_augment(img: Image.Image, resolution: int, latent_factor: int, rng: np.random.Generator, cfg):
    """Stage-2 target with the authors' scale augmentation (their datasets.py `custom_aug`, after Custom
    Diffusion). A side s is drawn: with probability shrink_p from [R/3, R], else from [1.2 R, 1.4 R); odd
    sides are made even. Then
    - s < far_below * R: the crop resized to s x s is pasted centred at a uniform (cy, cx) on a canvas of 0
      (mid-grey in [-1, 1]); the loss mask covers latent cells (c - s/2) // f + 1 to (c + s/2) // f - 1
      (exclusive) on each axis, their rounding; caption prefix from far_prefixes;
    - s > R: resized to s x s and cropped back to R at a uniform place; loss everywhere; near prefix;
    - otherwise (about 40% of all samples at R = 512): resized to the full frame, loss everywhere, no prefix.
    Returns (target (3, R, R) in [-1, 1], loss mask (1, R/f, R/f), prefix or None).
    """
    cells = resolution // latent_factor
    shrink, enlarge = scale_sides(resolution, cfg)
    side = int(rng.integers(*shrink)) if rng.random() < cfg.shrink_p else int(rng.integers(*enlarge))
    side += side % 2
    full = torch.ones(1, cells, cells)
    if side < cfg.far_below * resolution:
        half = side // 2
        cy, cx = (int(rng.integers(half, resolution - half + 1)) for _ in range(2))
        canvas = torch.zeros(3, resolution, resolution)
        canvas[:, cy - half : cy + half, cx - half : cx + half] = target_tensor(img, side)
        mask = torch.zeros(1, cells, cells)
        mask[
            :,
            (cy - half) // latent_factor + 1 : (cy + half) // latent_factor - 1,
            (cx - half) // latent_factor + 1 : (cx + half) // latent_factor - 1,
        ] = 1.0
        return canvas, mask, str(rng.choice(cfg.far_prefixes))
    if side > resolution:
        top, left = (int(rng.integers(0, side - resolution + 1)) for _ in range(2))
        big = target_tensor(img, side)
        return big[:, top : top + resolution, left : left + resolution], full, str(rng.choice(cfg.near_prefixes))
    return target_tensor(img, resolution), full, None

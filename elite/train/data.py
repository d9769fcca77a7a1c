"""Training manifests and datasets.

A dataset item is addressed by a *draw number* n, not by a row: draw n belongs to epoch n // N, is
row perm_epoch[n % N] (a permutation seeded by (seed, epoch)), and all of its randomness (crop pad,
template, augmentation, scale augmentation, noise, timestep) comes from a generator seeded by
(seed, n). Process p of P takes the draws (m * P + p) * B + b of micro-batch m, so any number of
processes reads disjoint samples, and a run resumed at step s reads exactly the samples an
uninterrupted run would have read from step s on.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from elite.errors import EliteError
from elite.images import mask_box, open_image, open_mask, padded_box
from elite.io import inside
from elite.models.text import tokenize_with_placeholder
from elite.pixels import clip_pixels, masked_clip_pixels, normalize
from elite.train.augment import (
    global_clip_augment,
    global_clip_pipeline,
    local_clip_augment,
    scale_augment,
    target_tensor,
)
from elite.train.templates import TEMPLATES, caption

NUM_WORDS = 5  # stage 1 injects all five words at the placeholder


@dataclass(frozen=True)
class Row:
    image: str
    box: tuple[float, float, float, float]
    mask: str | None


def read_manifest(path: str | Path, need_mask: bool) -> list[Row]:
    """Rows of a JSON Lines manifest (paths relative to the working directory), checked up front."""
    path = Path(path)
    if not path.is_file():
        raise EliteError(f"{path}: training manifest not found; run the stages that write it (dvc repro)")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EliteError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("image"), str):
            raise EliteError(f'{where}: each line must be an object with an "image" path')
        box = rec.get("box")
        if not (
            isinstance(box, list)
            and len(box) == 4
            and all(isinstance(v, (int, float)) for v in box)
            and all(math.isfinite(v) for v in box)
            and box[2] > box[0]
            and box[3] > box[1]
        ):
            raise EliteError(
                f'{where}: "box" must be [x0, y0, x1, y1] in pixels with x1 > x0 and y1 > y0, got {box!r}'
            )
        for key in ("image", "mask"):  # only files of the repository or of the manifest's own folder are read
            value = rec.get(key)
            if isinstance(value, str) and not inside(value, ".", path.parent):
                raise EliteError(
                    f"{where}: {key} {value} is outside the repository and {path.parent}; "
                    f"paths are relative to the repository root"
                )
        if not Path(rec["image"]).is_file():
            raise EliteError(f"{where}: image {rec['image']} not found (paths are relative to the repository root)")
        mask = rec.get("mask")
        if need_mask:
            if not isinstance(mask, str):
                raise EliteError(f'{where}: stage 2 needs a "mask" path on every row (run the mask stage)')
            if not Path(mask).is_file():
                raise EliteError(f"{where}: mask {mask} not found")
        rows.append(Row(rec["image"], tuple(float(v) for v in box), mask if isinstance(mask, str) else None))
    if not rows:
        raise EliteError(f"{path}: manifest has no samples")
    return rows


class DrawSampler(Sampler[int]):
    """The draw numbers of one process for micro-batches [start, stop)."""

    def __init__(self, start: int, stop: int, batch_size: int, process_index: int, num_processes: int) -> None:
        self.start, self.stop, self.batch_size = start, stop, batch_size
        self.process_index, self.num_processes = process_index, num_processes

    def __iter__(self):
        for m in range(self.start, self.stop):
            first = (m * self.num_processes + self.process_index) * self.batch_size
            yield from range(first, first + self.batch_size)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.batch_size


class DrawDataset(Dataset):
    """Base: draw number -> (row index, generator). Subclasses build the sample from those."""

    def __init__(self, rows: list[Row], seed: int, repeat_randomness: bool) -> None:
        self.rows, self.seed, self.repeat = rows, seed, repeat_randomness
        self._epoch: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def _perm(self, epoch: int) -> np.ndarray:
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, np.random.default_rng([self.seed, 0, epoch]).permutation(len(self.rows)))
        return self._epoch[1]

    def locate(self, draw: int) -> tuple[int, np.random.Generator]:
        index = int(self._perm(draw // len(self.rows))[draw % len(self.rows)])
        key = [self.seed, 2, index] if self.repeat else [self.seed, 1, draw]
        return index, np.random.default_rng(key)

    def __getitem__(self, draw: int) -> dict:
        index, rng = self.locate(int(draw))
        sample = self.make(index, rng)
        sample["noise_seed"] = int(rng.integers(0, 2**62))
        sample["index"] = index
        return sample

    def make(self, index: int, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def crop(self, index: int, pad: int, with_mask: bool = False, box_from_mask: bool = False):
        """The row's box grown by `pad` px (clipped at the border) cut from its image (and mask). With
        `box_from_mask` the box is the mask's tight box (`mask_box`) instead of the manifest's."""
        row = self.rows[index]
        image = open_image(row.image)
        if not with_mask:
            return image.crop(padded_box(row.box, image.size, pad)), None
        with warnings.catch_warnings():  # release masks come at another resolution: resized, no warning
            warnings.simplefilter("ignore")
            mask = open_mask(row.mask, image.size)
        box = padded_box(mask_box(mask) if box_from_mask else row.box, image.size, pad)
        return image.crop(box), mask.crop(box)


class ClipSpec:
    """Size and normalisation of the CLIP vision tower's input (from its image processor)."""

    def __init__(self, processor) -> None:
        self.size = processor.crop_size["height"] if processor.crop_size else processor.size["shortest_edge"]
        self.mean, self.std = list(processor.image_mean), list(processor.image_std)


class GlobalDataset(DrawDataset):
    """Stage 1: target = the padded box crop (resolution, unaugmented); CLIP input = the same crop, augmented.
    With a latent cache the target is the cached VAE latent distribution instead of pixels."""

    def __init__(self, rows, cfg, tokenizer, clip: ClipSpec, cache=None) -> None:
        super().__init__(rows, cfg.seed, cfg.repeat_randomness)
        self.cfg, self.tokenizer, self.clip, self.cache = cfg, tokenizer, clip, cache
        self.augment = global_clip_pipeline(cfg)

    def make(self, index: int, rng: np.random.Generator) -> dict:
        cfg = self.cfg
        pad = int(rng.integers(cfg.crop_pad[0], cfg.crop_pad[1] + 1))
        template = int(rng.integers(len(TEMPLATES)))
        crop, _ = self.crop(index, pad)
        clip, _ = global_clip_augment(clip_pixels(crop, self.clip.size), rng, self.augment)
        # word dropout (not the authors'): w0 alone at the placeholder, as inference injects it (no draw when off,
        # so a run without it draws exactly what it drew before the option existed)
        primary_only = cfg.word_dropout > 0 and bool(rng.random() < cfg.word_dropout)
        slots = 1 if primary_only else NUM_WORDS
        tok = tokenize_with_placeholder(self.tokenizer, caption(template), num_slots=slots)
        sample = {
            "input_ids": tok.input_ids,
            "slot": tok.slot,
            "primary_only": primary_only,
            "clip_pixels": normalize(clip, self.clip.mean, self.clip.std),
        }
        if self.cache is not None:
            sample["latent_moments"] = self.cache.load(index)
        else:
            sample["pixel_values"] = target_tensor(crop, cfg.resolution)
        return sample

    def target_crop(self, index: int):
        """The (fixed) target crop of a row, for the latent cache: needs a fixed crop_pad."""
        return target_tensor(self.crop(index, self.cfg.crop_pad[0])[0], self.cfg.resolution)


class LocalDataset(DrawDataset):
    """Stage 2: target = the padded crop (around the mask's tight box, `crop_box: mask`, as the authors) with
    the scale augmentation (+ caption prefix and loss mask); CLIP inputs = the whole crop (for the frozen
    global mapper) and the object cut out at full resolution, augmented with its mask."""

    def __init__(self, rows, cfg, tokenizer, clip: ClipSpec, latent_factor: int) -> None:
        super().__init__(rows, cfg.seed, cfg.repeat_randomness)
        self.cfg, self.tokenizer, self.clip, self.latent_factor = cfg, tokenizer, clip, latent_factor

    def make(self, index: int, rng: np.random.Generator) -> dict:
        cfg = self.cfg
        pad = int(rng.integers(cfg.crop_pad[0], cfg.crop_pad[1] + 1))
        template = int(rng.integers(len(TEMPLATES)))
        crop, mask = self.crop(index, pad, with_mask=True, box_from_mask=cfg.crop_box == "mask")
        target, loss_mask, prefix = scale_augment(crop, cfg.resolution, self.latent_factor, rng, cfg)
        tok = tokenize_with_placeholder(self.tokenizer, caption(template, prefix), num_slots=1)
        full, obj, m = masked_clip_pixels(crop, mask, self.clip.size)
        obj, m, _ = local_clip_augment(obj, m, rng, cfg)
        return {
            "input_ids": tok.input_ids,
            "slot": tok.slot,
            "pixel_values": target,
            "loss_mask": loss_mask,
            "clip_pixels": normalize(full, self.clip.mean, self.clip.std),
            "clip_object": normalize(obj, self.clip.mean, self.clip.std),
            "clip_mask": m,
        }


def worker_error(exc: BaseException) -> EliteError | None:
    """An EliteError raised in a DataLoader worker comes back wrapped in a traceback: keep its one line."""
    if not isinstance(exc, EliteError):
        return None
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    last = lines[-1] if lines else str(exc)
    prefix = "elite.errors.EliteError: "
    return EliteError(last[len(prefix) :] if last.startswith(prefix) else last)


def collate(samples: list[dict]) -> dict:
    return {
        key: torch.stack([s[key] for s in samples])
        if isinstance(samples[0][key], torch.Tensor)
        else torch.tensor([s[key] for s in samples])
        for key in samples[0]
    }

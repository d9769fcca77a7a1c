"""The mask stage: a SAM mask for every stage-2 box, the stage-2 manifest, and DreamBench concept masks.

* Every row of `data/curated/local.jsonl` gets a SAM mask prompted with its box, written as a PNG
  the size of the image (white = object) to `data/masks/sam/<id[:2]>/<ImageID>_<x0>_<y0>_<x1>_<y1>.png`.
  Per image: one image-encoder pass and all of its boxes in one batched prompt call.
* `data/masks/local.jsonl` (the stage-2 training manifest): every row has a mask. A row with a
  release mask keeps it (`mask_source: release`) and records SAM's IoU against it (`sam_iou`); a row
  without one gets the SAM mask (`mask_source: sam`), or is dropped (counted) when SAM's mask has
  fewer than `mask.min_mask_pixels` pixels.
* DreamBench (when `data/dreambench/subjects.json` exists): the concept image `images[concept_index]`
  of every subject gets `data/masks/dreambench/<subject>.png`, SAM prompted with the box of the
  dominant object of SAM's automatic mask generator (`concept_box: auto`: the largest automatic mask
  that is not background, i.e. covers at most `auto_max_area` of the image), or with the whole image
  (`concept_box: image`, also the fallback when the generator finds nothing). When SAM returns an
  empty mask the prompt box itself becomes the mask (counted). `concept_extra_images: k` masks the k
  images after the concept image the same way, as `<subject>.<image stem>.png` (the evaluation's rows of
  a concept from several images). (The issue names
  data/dreambench/masks/; DVC outputs cannot overlap, so they live under data/masks/.)
* Sharding: `--shard i/n` takes every n-th image (sorted ImageIDs, from the i-th) and every n-th
  DreamBench subject. Masks already on disk are not recomputed, so a killed run resumes and many
  workers can share the folder. Each shard writes `data/masks/shards/<i>-of-<n>.json`; the shard
  that completes the set (all n files made from the same local.jsonl) writes `data/masks/local.jsonl`
  and `metrics/mask.json`. Without --shard (n = 1, the DVC stage) that is the same run.
  `model.json` in `data/masks/sam/` and `data/masks/dreambench/` names the SAM (checkpoint SHA-256) and
  the settings that made the masks there: a run with others refuses to mix them.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from elite import shards
from elite.data import paths
from elite.data.manifest import read_manifest, write_manifest
from elite.data.sam import BoxMasker, load_sam, resolve_device, sam_fingerprint
from elite.errors import EliteError
from elite.io import atomic_file, read_json, write_json

SUBJECT = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,127}$")


def parse_shard(text: str | None) -> tuple[int, int]:
    """--shard i/n; no shard is the one shard 0/1."""
    return shards.parse_shard(text) or (0, 1)


def sam_mask_path(image_id: str, box: list[int]) -> Path:
    return paths.MASKS / "sam" / image_id[:2] / f"{image_id}_{box[0]}_{box[1]}_{box[2]}_{box[3]}.png"


def save_mask(mask: np.ndarray, path: Path) -> None:
    with atomic_file(path, suffix=".png") as tmp:
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(tmp, format="PNG")


def load_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Boolean mask (H, W) of a PNG (white = object), resized (nearest) to `size` = (W, H) if needed."""
    with Image.open(path) as img:
        m = img.convert("L")
        if m.size != size:
            m = m.resize(size, Image.NEAREST)
        return np.asarray(m) >= 128


def mask_iou(a: np.ndarray, b: np.ndarray) -> float | None:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else None


def load_rgb(path: str | Path, header_only: bool = False) -> np.ndarray | tuple[int, int] | None:
    """(H, W, 3) uint8 pixels as stored (curate drops EXIF-rotated images), or with `header_only` just
    (width, height); None when unreadable."""
    try:
        with Image.open(path) as img:
            return img.size if header_only else np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def run_mask(cfg, shard: tuple[int, int] = (0, 1)) -> dict | None:
    """Process one shard; returns the merged metrics when this run completed the set, else None."""
    threads = torch.get_num_threads()
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    try:
        return _run_mask(cfg, shard)
    finally:
        torch.set_num_threads(threads)


def _run_mask(cfg, shard: tuple[int, int]) -> dict | None:
    index, count = shard
    manifest = paths.CURATED / "local.jsonl"
    rows = read_manifest(manifest)
    fingerprint = hashlib.sha256(manifest.read_bytes()).hexdigest()
    device = resolve_device(cfg.device)
    masker = BoxMasker(load_sam(paths.SAM_DIR, device), cfg.multimask)
    sam_id = sam_fingerprint(paths.SAM_DIR)
    _check_marker(paths.MASKS / "sam", {"sam": sam_id, "multimask": cfg.multimask}, "mask.multimask")
    if paths.DREAMBENCH_SUBJECTS.is_file():
        concept = {
            k: v for k, v in cfg.model_dump().items() if k.startswith(("concept_", "auto_")) or k == "min_mask_pixels"
        }
        _check_marker(
            paths.MASKS / "dreambench",
            {"sam": sam_id, "multimask": cfg.multimask, **concept},
            "mask.concept_* / auto_* / min_mask_pixels",
        )

    by_image: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_image[row["image_id"]].append(row)
    mine = sorted(by_image)[index::count]
    out_rows: list[dict] = []
    stats = {
        "images": len(mine),
        "images_encoded": 0,
        "encode_seconds": 0.0,
        "masks_made": 0,
        "unreadable": 0,
        "dropped_empty": 0,
    }
    for image_id in tqdm(mine, desc=f"sam {index}/{count}", unit="img"):
        _mask_image(masker, by_image[image_id], cfg, stats, out_rows)
    stats.update(_dreambench(masker, cfg, index, count))
    write_json(
        paths.MASKS / "shards" / f"{index}-of-{count}.json",
        {"fingerprint": fingerprint, "shard": [index, count], "rows": out_rows, "stats": stats},
    )
    return merge_shards(count, fingerprint)


def _mask_image(masker: BoxMasker, rows: list[dict], cfg, stats: dict, out_rows: list[dict]) -> None:
    image_id = rows[0]["image_id"]
    boxes = sorted({tuple(r["box"]) for r in rows})
    todo = [b for b in boxes if not sam_mask_path(image_id, list(b)).is_file()]
    rgb = load_rgb(rows[0]["image"]) if todo else None
    size = (rgb.shape[1], rgb.shape[0]) if rgb is not None else load_rgb(rows[0]["image"], header_only=True)
    if size is None or (todo and rgb is None):
        stats["unreadable"] += len(rows)
        return
    sam: dict[tuple, np.ndarray] = {}
    if todo:
        start = time.perf_counter()
        masks, _ = masker(rgb, [list(b) for b in todo])
        stats["encode_seconds"] += time.perf_counter() - start
        stats["images_encoded"] += 1
        for b, m in zip(todo, masks):
            save_mask(m, sam_mask_path(image_id, list(b)))
            sam[b] = m
        stats["masks_made"] += len(todo)
    for row in rows:
        b = tuple(row["box"])
        path = sam_mask_path(image_id, row["box"])
        m = sam[b] if b in sam else load_mask(path, size)
        if row["mask"] is not None:
            iou = mask_iou(m, load_mask(row["mask"], size))
            out_rows.append({**row, "mask_source": "release", "sam_iou": None if iou is None else round(iou, 6)})
        elif m.sum() >= cfg.min_mask_pixels:
            out_rows.append({**row, "mask": paths.rel(path), "mask_source": "sam"})
        else:
            stats["dropped_empty"] += 1


def _check_marker(folder: Path, made_by: dict, settings: str) -> None:
    """Masks already in `folder` are reused only if the same SAM (and settings) made them."""
    marker = folder / "model.json"
    if marker.is_file() and json.loads(marker.read_text()) != made_by:
        raise EliteError(
            f"{folder}: these masks were made by another SAM or other {settings}; delete "
            f"{folder} (or run through DVC, which does) to make them again"
        )
    write_json(marker, made_by)


def read_subjects(path: Path, concept_index: int, extra: int = 0) -> list[tuple[str, list[str]]]:
    """[(subject, [concept image, then the `extra` images after it])] from subjects.json; errors name the
    file and entry."""
    subjects = read_json(path, list, "DreamBench subjects file", "run `elite dreambench` again")
    out = []
    for i, entry in enumerate(subjects):
        name = entry.get("subject") if isinstance(entry, dict) else None
        images = entry.get("images") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not SUBJECT.match(name):
            raise EliteError(f"{path}: entry {i}: 'subject' must be a plain name (letters, digits, _ . -)")
        if not isinstance(images, list) or not images:
            raise EliteError(f"{path}: subject {name}: 'images' must be a non-empty list")
        if concept_index + extra >= len(images):
            what = "mask.concept_index" if not extra else "mask.concept_index + mask.concept_extra_images"
            raise EliteError(
                f"{path}: subject {name} has {len(images)} images; {what} {concept_index + extra} is out of range"
            )
        out.append((name, images[concept_index : concept_index + extra + 1]))
    return out


def concept_mask(masker: BoxMasker, rgb: np.ndarray, cfg) -> tuple[np.ndarray, bool, bool]:
    """The object mask of a concept image (H, W, 3 uint8), by the `mask` params: SAM prompted with the box
    of the most salient object (`concept_box: auto`: the largest automatic mask covering at most
    `auto_max_area` of the image) or with the whole image (`concept_box: image`, and the fallback when the
    generator finds nothing); a SAM mask under `min_mask_pixels` is replaced by the prompt box itself.
    Returns (mask (H, W) bool, whether the automatic box was used, whether the box fallback was)."""
    h, w = rgb.shape[:2]
    box = None
    if cfg.concept_box == "auto":
        box = masker.dominant_box(
            rgb, cfg.auto_points_per_side, cfg.auto_pred_iou_thresh, cfg.auto_stability_thresh, cfg.auto_max_area
        )
    auto_box = box is not None
    box = box or [0, 0, w, h]
    mask = masker(rgb, [box])[0][0]
    if mask.sum() >= cfg.min_mask_pixels:
        return mask, auto_box, False
    mask = np.zeros((h, w), bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return mask, auto_box, True


def _dreambench(masker: BoxMasker, cfg, index: int, count: int) -> dict:
    stats = {"dreambench_masks": 0, "dreambench_made": 0, "dreambench_auto_box": 0, "dreambench_box_fallback": 0}
    if not paths.DREAMBENCH_SUBJECTS.is_file():
        return stats
    subjects = read_subjects(paths.DREAMBENCH_SUBJECTS, cfg.concept_index, cfg.concept_extra_images)
    for name, images in tqdm(subjects[index::count], desc="dreambench masks", unit="subject", leave=False):
        for k, image in enumerate(images):
            out = paths.MASKS / "dreambench" / paths.concept_mask_name(name, image, first=k == 0)
            stats["dreambench_masks"] += 1
            if out.is_file():
                continue
            rgb = load_rgb(image)
            if rgb is None:
                raise EliteError(
                    f"{image}: DreamBench image of {name} is missing or unreadable; run `elite dreambench` again"
                )
            mask, auto_box, box_fallback = concept_mask(masker, rgb, cfg)
            stats["dreambench_auto_box"] += auto_box
            stats["dreambench_box_fallback"] += box_fallback
            save_mask(mask, out)
            stats["dreambench_made"] += 1
    return stats


def merge_shards(count: int, fingerprint: str) -> dict | None:
    """When all `count` shard files are there and made from this local.jsonl: write the manifest and metrics."""
    parts = []
    for i in range(count):
        path = paths.MASKS / "shards" / f"{i}-of-{count}.json"
        try:
            part = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if part.get("fingerprint") != fingerprint:
            return None
        parts.append(part)
    rows = sorted(
        (r for p in parts for r in p["rows"]), key=lambda r: (r["image_id"], r["box"], r["label"], r["mask"])
    )
    write_manifest(paths.MASKS / "local.jsonl", rows)
    total = defaultdict(float)
    for p in parts:
        for k, v in p["stats"].items():
            total[k] += v
    ious = [r["sam_iou"] for r in rows if r.get("sam_iou") is not None]
    metrics = {
        "rows": len(rows),
        "release": sum(1 for r in rows if r["mask_source"] == "release"),
        "sam": sum(1 for r in rows if r["mask_source"] == "sam"),
        "dropped_empty": int(total["dropped_empty"]),
        "unreadable": int(total["unreadable"]),
        "masks_made": int(total["masks_made"]),
        "mean_iou_vs_release": round(float(np.mean(ious)), 6) if ious else None,
        "iou_pairs": len(ious),
        "images": int(total["images"]),
        "images_encoded": int(total["images_encoded"]),
        "images_per_s": round(total["images_encoded"] / total["encode_seconds"], 3)
        if total["encode_seconds"]
        else None,
        "dreambench_masks": int(total["dreambench_masks"]),
        "dreambench_made": int(total["dreambench_made"]),
        "dreambench_auto_box": int(total["dreambench_auto_box"]),
        "dreambench_box_fallback": int(total["dreambench_box_fallback"]),
        "shards": count,
    }
    write_json(paths.metrics_file("mask"), metrics)
    return metrics

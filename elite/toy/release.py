"""The toy world written as an Open Images split in the official release layout (download.source: toy), so
download, curate and mask read it exactly as they read the real release. Scenes with a held-out identity
are left out: they are the evaluation concepts, never ELITE's training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from elite.data.synth import annotate, new_image_id, write_release_tables
from elite.toy.heldout import held_out_identities
from elite.toy.world import CLASSES, render, sample_spec

# LabelName (Open Images style id, unique to the toy world) and DisplayName of each class
TOY_CLASSES = [(f"/t/toy_{name}", name.capitalize()) for name in CLASSES]


def write_toy_release(
    root: Path,
    split: str,
    n_images: int,
    size: int,
    seed: int,
    held_out: frozenset[tuple[str, str]],
    mask_fraction: float,
) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    boxes, segs, masks, used = [], [], {}, set()
    written = 0
    while written < n_images:
        spec = sample_spec(rng)
        if any(o.identity in held_out for o in spec.objects):
            continue
        r = render(spec, size)
        image_id = new_image_id(rng, used)
        Image.fromarray(r.image).save(root / split / f"{image_id}.jpg", quality=95)
        objs = [
            {"cls": TOY_CLASSES[CLASSES.index(o.cls)], "mask": m, "visible": m, "group": False, "depiction": False}
            for o, m in zip(spec.objects, r.masks)
            if m.sum() >= 4
        ]
        annotate(rng, image_id, size, size, objs, mask_fraction, boxes, segs, masks)
        written += 1
    write_release_tables(root, split, TOY_CLASSES, boxes, segs, masks)
    return root


def toy_release(params, out: Path) -> Path:
    """Plug-in `toy` of `elite.releases` (download.source: toy): the toy world's scenes, none of a held-out
    identity, in the Open Images release layout."""
    cfg, toy = params.download, params.toy
    held = held_out_identities(toy.held_out)
    return write_toy_release(out, cfg.split, cfg.toy_images, toy.size, cfg.seed, held, cfg.synthetic_mask_fraction)

"""A small generated Open Images split in the official release layout (the smoke profile's data).

Each scene is a JPEG with several flat-coloured objects of several classes (each class its own shape
and colour) drawn over a textured background; later objects occlude earlier ones. Every object gets
an exact box (the bounding box of its visible pixels); a share of them also gets an exact
segmentation mask (its visible pixels, white = object), named and archived as in the release
(`<ImageID>_<m...>_<BoxID>.png` inside `<split>-masks-<first hex digit>.zip`). Some objects are
drawn as groups (IsGroupOf), some are flagged as depictions, and the last scene is a byte-identical
copy of the first under another ImageID, so every curation rule has something to act on. The CSVs
have the official names and columns, so the same parser reads this and a real copy.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from elite.data.openimages import BOX_COLUMNS, SEG_COLUMNS

# (LabelName, DisplayName, shape, RGB): real Open Images ids; the last two never appear in scenes
CLASSES = [
    ("/m/0bt9lr", "Dog", "ellipse", (150, 90, 40)),
    ("/m/01yrx", "Cat", "triangle", (240, 200, 60)),
    ("/m/0k4j", "Car", "rectangle", (40, 70, 200)),
    ("/m/01g317", "Person", "capsule", (230, 170, 150)),
    ("/m/0cmf2", "Airplane", "cross", (200, 200, 210)),
    ("/m/014j1m", "Apple", "disc", (200, 30, 30)),
    ("/m/01mzpv", "Chair", "rectangle", (90, 60, 30)),
    ("/m/015p6", "Bird", "diamond", (30, 160, 90)),
]
USED = 6


def shape_mask(kind: str, h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean (h, w) mask of a shape filling the pixel box (x0, y0, x1, y1), end exclusive."""
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    cx, cy, rx, ry = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, max((x1 - x0) / 2, 1), max((y1 - y0) / 2, 1)
    u, v = (xx - cx) / rx, (yy - cy) / ry  # -1..1 inside the box
    inside = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
    if kind == "ellipse" or kind == "disc":
        m = u**2 + v**2 <= 1
    elif kind == "triangle":
        m = (v <= 1) & (np.abs(u) <= (v + 1) / 2)
    elif kind == "capsule":
        m = (np.abs(u) <= 0.5) & (v >= -0.3) | (u**2 + ((v + 0.6) / 0.4) ** 2 <= 1)
    elif kind == "cross":
        m = (np.abs(u) <= 0.25) | (np.abs(v) <= 0.25)
    elif kind == "diamond":
        m = np.abs(u) + np.abs(v) <= 1
    else:
        m = np.ones((h, w), bool)
    return m & inside


def _fmt(x: float) -> str:
    return repr(float(x))


def write_synthetic_release(
    root: Path, split: str, n_images: int, size: list[int], objects: list[int], mask_fraction: float, seed: int
) -> Path:
    """Write the release layout (see module docstring) to `root`; returns `root`."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    boxes, segs, masks = [], [], {}
    used_ids: set[str] = set()
    for index in range(n_images - 1):
        image_id = new_image_id(rng, used_ids)
        w, h = (int(v) for v in rng.integers(size[0], size[1] + 1, 2))
        rgb, objs = _scene(rng, w, h, int(rng.integers(objects[0], objects[1] + 1)))
        Image.fromarray(rgb).save(root / split / f"{image_id}.jpg", quality=90)
        annotate(rng, image_id, w, h, objs, mask_fraction, boxes, segs, masks)
        if index == 0:
            first = (image_id, w, h, objs)
    # the last scene: the first scene's file under a new ImageID (an exact duplicate)
    dup_id = new_image_id(rng, used_ids)
    (root / split / f"{dup_id}.jpg").write_bytes((root / split / f"{first[0]}.jpg").read_bytes())
    annotate(rng, dup_id, first[1], first[2], first[3], mask_fraction, boxes, segs, masks)

    write_release_tables(root, split, [c[:2] for c in CLASSES], boxes, segs, masks)
    return root


def write_release_tables(
    root: Path, split: str, classes: list[tuple[str, str]], boxes: list, segs: list, masks: dict[str, bytes]
) -> None:
    """The release's CSVs, class lists, hierarchy and mask archives for rows made by `annotate`. The archives
    carry a fixed timestamp, so the same rows give byte-identical files (DVC then sees no change)."""
    _write_csv(root / f"{split}-annotations-bbox.csv", BOX_COLUMNS, boxes)
    _write_csv(root / f"{split}-annotations-object-segmentation.csv", SEG_COLUMNS, segs)
    _write_csv(root / "oidv7-class-descriptions-boxable.csv", ["LabelName", "DisplayName"], classes)
    (root / "oidv7-classes-segmentation.txt").write_text("".join(f"{c[0]}\n" for c in classes))
    (root / "bbox_labels_600_hierarchy.json").write_text(
        json.dumps({"LabelName": "/m/0bl9f", "Subcategory": [{"LabelName": c[0]} for c in classes]}, indent=1)
    )
    by_archive: dict[str, list[str]] = {}
    for name in sorted(masks):
        by_archive.setdefault(name[0], []).append(name)
    for digit, names in by_archive.items():
        with zipfile.ZipFile(root / f"{split}-masks-{digit}.zip", "w", zipfile.ZIP_STORED) as zf:
            for name in names:
                zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), masks[name])


def new_image_id(rng, used: set[str]) -> str:
    while True:
        image_id = "".join(rng.choice(list("0123456789abcdef"), 16))
        if image_id not in used and not image_id.isdigit():
            used.add(image_id)
            return image_id


def _scene(rng, w: int, h: int, k: int):
    yy, xx = np.mgrid[:h, :w]
    base = rng.integers(60, 200, 3)
    rgb = (
        base[None, None, :]
        + 25 * np.sin(xx / rng.uniform(6, 20))[..., None]
        + 25 * np.cos(yy / rng.uniform(6, 20))[..., None]
        + rng.normal(0, 6, (h, w, 3))
    )
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    objs = []
    backdrop = rng.random() < 0.2  # a first object filling most of the frame (box area > 0.8)
    for j in range(k):
        cls = CLASSES[int(rng.integers(USED))]
        group = rng.random() < 0.12
        low, high = (0.92, 1.0) if backdrop and j == 0 else (0.08, 0.75)
        bw, bh = max(int(w * rng.uniform(low, high)), 4), max(int(h * rng.uniform(low, high)), 4)
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        if group:  # three small copies side by side, one box around them
            m = np.zeros((h, w), bool)
            for j in range(3):
                sx0 = x0 + j * bw // 3
                m |= shape_mask(cls[2], h, w, (sx0, y0 + bh // 3, sx0 + max(bw // 3 - 2, 2), y0 + 2 * bh // 3))
        else:
            m = shape_mask(cls[2], h, w, (x0, y0, x0 + bw, y0 + bh))
        colour = np.clip(np.array(cls[3]) + rng.integers(-20, 21, 3), 0, 255).astype(np.uint8)
        rgb[m] = colour
        objs.append({"cls": cls, "mask": m, "group": group, "depiction": bool(rng.random() < 0.1)})
    covered = np.zeros((h, w), bool)
    for obj in reversed(objs):  # visible part = not covered by anything drawn later
        obj["visible"] = obj["mask"] & ~covered
        covered |= obj["mask"]
    return rgb, [o for o in objs if o["visible"].sum() >= 16]


def annotate(rng, image_id, w, h, objs, mask_fraction, boxes, segs, masks) -> None:
    for obj in objs:
        vis = obj["visible"]
        ys, xs = np.nonzero(vis)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        mid = obj["cls"][0]
        coords = [_fmt(x0 / w), _fmt(x1 / w), _fmt(y0 / h), _fmt(y1 / h)]
        truncated = int(x0 == 0 or y0 == 0 or x1 == w or y1 == h)
        occluded = int(vis.sum() < obj["mask"].sum())
        boxes.append(
            [
                image_id,
                "xclick",
                mid,
                "1",
                *coords,
                str(occluded),
                str(truncated),
                str(int(obj["group"])),
                str(int(obj["depiction"])),
                "0",
            ]
        )
        if obj["group"] or rng.random() >= mask_fraction:
            continue
        box_id = "".join(rng.choice(list("0123456789abcdef"), 8))
        name = f"{image_id}_{mid.replace('/', '')}_{box_id}.png"
        buf = io.BytesIO()
        Image.fromarray((vis * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
        masks[name] = buf.getvalue()
        inside = rng.integers(len(xs), size=2)
        clicks = ";".join(f"{xs[i] / w:.5f} {ys[i] / h:.5f} 1" for i in inside)
        segs.append([name, image_id, mid, box_id, *coords, f"{rng.uniform(0.7, 0.95):.5f}", clicks])


def _write_csv(path: Path, header: list[str], rows: list) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)

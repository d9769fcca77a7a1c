"""The curate stage: pick ELITE's training samples from the Open Images dataset in FiftyOne.

* Images: every file is decoded (at 1/8 scale for JPEG, which still reads all of it) in a thread
  pool; unreadable or truncated files, files with an EXIF rotation (boxes would not fit the pixels
  that a loader rotates) and, optionally, byte-identical copies of an earlier image are dropped and
  counted. Nothing here crashes on a bad file.
* Stage 1 (global.jsonl): one sample per box with normalised area in [min_area, max_area], after
  the optional group-of and depiction rules.
* Stage 2 (local.jsonl): one sample per release segmentation mask whose box is at least
  `min_side` pixels per side with aspect <= `max_aspect`; with `local_from_boxes`, also every box
  passing the same rules (and the group-of / depiction rules) that no release mask of its class
  covers (box IoU < `match_iou`): the mask stage gives those a SAM mask.

Each box and mask is tagged in FiftyOne with the first rule it failed (`drop:<rule>`) or what it
was kept for (`global`, `local`), dropped images with `drop:<reason>`, and saved views
(`curated-global`, `curated-local`, `dropped-images`, `dropped-labels`) open them in the App.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from elite.data import paths
from elite.data.fiftyone_db import BOXES, IMAGE_ID, MASKS, RELEASE_MASK, fiftyone, open_dataset
from elite.data.manifest import write_manifest
from elite.errors import EliteError
from elite.io import atomic_dir, write_json
from elite.tracking import scoped_dataset

IMAGE_DROPS = ["drop:unreadable", "drop:exif_rotated", "drop:duplicate"]
BOX_RULES = ["drop:group_of", "drop:depiction", "drop:small_area", "drop:large_area"]
SIZE_RULES = ["drop:small_box", "drop:aspect"]
KEEP_TAGS = ["global", "local", "has_mask"]
ALL_LABEL_TAGS = BOX_RULES + SIZE_RULES + KEEP_TAGS


def check_image(path: str) -> tuple[str, str | None]:
    """('ok' | 'unreadable' | 'exif_rotated', sha256 of the file or None)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return "unreadable", None
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as img:  # PIL refuses decompression bombs here
            orientation = img.getexif().get(0x0112, 1)
            img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return "unreadable", digest
    return ("ok" if orientation in (0, 1) else "exif_rotated"), digest


def read_release_info() -> dict:
    path = paths.OPENIMAGES / "release.json"
    try:
        info = json.loads(path.read_text())
        return {k: info[k] for k in ("stamp", "split", "dataset")}
    except FileNotFoundError:
        raise EliteError(f"{path} not found: run `elite download` first") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise EliteError(f"{path}: not a download record ({exc}); run `elite download` again") from None


def pixel_box(bb: list[float], width: int, height: int) -> list[int]:
    """FiftyOne's relative [x, y, w, h] -> [x0, y0, x1, y1] pixels (end exclusive), inside the image."""
    x0 = min(max(round(bb[0] * width), 0), width - 1)
    y0 = min(max(round(bb[1] * height), 0), height - 1)
    x1 = min(max(round((bb[0] + bb[2]) * width), x0 + 1), width)
    y1 = min(max(round((bb[1] + bb[3]) * height), y0 + 1), height)
    return [x0, y0, x1, y1]


def box_iou(a: list[float], b: list[float]) -> float:
    """IoU of two [x, y, w, h] boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def run_curate(cfg) -> dict:
    """Tag the FiftyOne dataset and write data/curated/{global,local}.jsonl; returns the metrics."""
    info = read_release_info()
    fiftyone()
    from fiftyone import ViewField as F

    dataset = open_dataset(paths.OPENIMAGES / info["split"], scoped_dataset(info["dataset"]), info["stamp"])
    dataset.untag_samples(IMAGE_DROPS)
    dataset.untag_labels(ALL_LABEL_TAGS, label_fields=[BOXES, MASKS])

    drop = _drop_images(dataset, cfg)
    kept = dataset.match_tags(IMAGE_DROPS, bool=False)

    # stage 1: box rules in order; a box gets the tag of the first rule it fails
    area = F("bounding_box")[2] * F("bounding_box")[3]
    untagged = ~F("tags").contains(ALL_LABEL_TAGS)
    rules = []
    if cfg.drop_group_of:
        rules.append(("drop:group_of", F("IsGroupOf") == True))  # noqa: E712 (a MongoDB expression)
    if cfg.drop_depiction:
        rules.append(("drop:depiction", F("IsDepiction") == True))  # noqa: E712
    rules += [("drop:small_area", area < cfg.min_area), ("drop:large_area", area > cfg.max_area)]
    for tag, cond in rules:
        kept.filter_labels(BOXES, untagged & cond).tag_labels(tag, label_fields=[BOXES])
    kept.filter_labels(BOXES, untagged).tag_labels("global", label_fields=[BOXES])

    # stage 2: size and aspect of the box in pixels
    w_px = F("bounding_box")[2] * F("$metadata.width")
    h_px = F("bounding_box")[3] * F("$metadata.height")
    size_rules = [
        ("drop:small_box", (w_px < cfg.min_side) | (h_px < cfg.min_side)),
        ("drop:aspect", (w_px > cfg.max_aspect * h_px) | (h_px > cfg.max_aspect * w_px)),
    ]
    for tag, cond in size_rules:
        kept.filter_labels(MASKS, untagged & cond).tag_labels(tag, label_fields=[MASKS])
    kept.filter_labels(MASKS, untagged).tag_labels("local", label_fields=[MASKS])
    if cfg.local_from_boxes:
        _local_boxes(kept, cfg, size_rules, F)

    rows_global, rows_local = _manifest_rows(kept)
    with atomic_dir(paths.CURATED) as tmp:
        write_manifest(tmp / "global.jsonl", rows_global)
        write_manifest(tmp / "local.jsonl", rows_local)

    dataset.save_view("curated-global", _with_labels(kept, ["global"], F), overwrite=True)
    dataset.save_view("curated-local", _with_labels(kept, ["local"], F), overwrite=True)
    dataset.save_view("dropped-images", dataset.match_tags(IMAGE_DROPS), overwrite=True)
    dataset.save_view("dropped-labels", _with_labels(dataset, BOX_RULES + SIZE_RULES, F), overwrite=True)

    box_tags = Counter(kept.count_label_tags(label_fields=[BOXES]))
    mask_tags = Counter(kept.count_label_tags(label_fields=[MASKS]))
    metrics = {
        "images": len(dataset),
        "images_kept": len(kept),
        "images_dropped": {t.split(":", 1)[1]: len(s) for t, s in drop.items()},
        "boxes": dataset.count(f"{BOXES}.detections"),
        "boxes_in_kept_images": kept.count(f"{BOXES}.detections"),
        "boxes_dropped": {t.split(":", 1)[1]: box_tags[t] for t in BOX_RULES},
        "masks": dataset.count(f"{MASKS}.detections"),
        "masks_in_kept_images": kept.count(f"{MASKS}.detections"),
        "masks_dropped": {t.split(":", 1)[1]: mask_tags[t] for t in SIZE_RULES},
        "global": len(rows_global),
        "local": len(rows_local),
        "local_release_masks": sum(1 for r in rows_local if r["mask"] is not None),
        "local_boxes_without_mask": sum(1 for r in rows_local if r["mask"] is None),
    }
    if cfg.local_from_boxes:
        metrics["local_boxes_covered_by_mask"] = box_tags["has_mask"]
    write_json(paths.metrics_file("curate"), metrics)
    return metrics


def _drop_images(dataset, cfg) -> dict[str, list[str]]:
    """Tag the images to drop (unreadable, EXIF-rotated, exact duplicates: the first ImageID of a digest stays);
    returns the sample ids per drop tag."""
    ids, files, oi_ids = dataset.values(["id", "filepath", IMAGE_ID])
    with ThreadPoolExecutor(cfg.workers) as pool:
        checks = list(
            tqdm(pool.map(check_image, files), total=len(files), desc="check images", unit="img", leave=False)
        )
    drop: dict[str, list[str]] = {tag: [] for tag in IMAGE_DROPS}
    seen: dict[str, str] = {}
    for sid, _oi_id, (status, digest) in sorted(zip(ids, oi_ids, checks), key=lambda t: t[1]):
        if status != "ok":
            drop[f"drop:{status}"].append(sid)
        elif cfg.drop_duplicates and digest in seen:
            drop["drop:duplicate"].append(sid)
        else:
            seen[digest] = sid
    for tag, sids in drop.items():
        if sids:
            dataset.select(sids).tag_samples(tag)
    return drop


def _with_labels(view, tags: list[str], F):
    """The samples of `view` that have a box or mask tagged with one of `tags`, showing only those labels."""
    for field in (BOXES, MASKS):
        view = view.filter_labels(field, F("tags").contains(tags), only_matches=False)
    return view.match((F(f"{BOXES}.detections").length() > 0) | (F(f"{MASKS}.detections").length() > 0))


def _local_boxes(kept, cfg, size_rules, F) -> None:
    """Tag as `local` the boxes that pass the stage-2 size rules and no release mask of their class covers."""
    candidates = kept.filter_labels(BOXES, ~F("tags").contains(["drop:group_of", "drop:depiction"]))
    for _, cond in size_rules:
        candidates = candidates.filter_labels(BOXES, ~cond)
    box_ids, box_labels, box_bbs, mask_labels, mask_bbs = candidates.values(
        [
            f"{BOXES}.detections.id",
            f"{BOXES}.detections.label",
            f"{BOXES}.detections.bounding_box",
            f"{MASKS}.detections.label",
            f"{MASKS}.detections.bounding_box",
        ]
    )
    local, covered = [], []
    for ids, labs, bbs, mlabs, mbbs in zip(box_ids, box_labels, box_bbs, mask_labels, mask_bbs):
        masks = list(zip(mlabs or [], mbbs or []))
        for lid, lab, bb in zip(ids or [], labs or [], bbs or []):
            hit = any(ml == lab and box_iou(bb, mb) >= cfg.match_iou for ml, mb in masks)
            (covered if hit else local).append(lid)
    if local:
        kept.select_labels(ids=local, fields=BOXES).tag_labels("local", label_fields=[BOXES])
    if covered:
        kept.select_labels(ids=covered, fields=BOXES).tag_labels("has_mask", label_fields=[BOXES])


def _manifest_rows(kept) -> tuple[list[dict], list[dict]]:
    fields = [
        "filepath",
        IMAGE_ID,
        "metadata.width",
        "metadata.height",
        f"{BOXES}.detections.label",
        f"{BOXES}.detections.bounding_box",
        f"{BOXES}.detections.tags",
        f"{MASKS}.detections.label",
        f"{MASKS}.detections.bounding_box",
        f"{MASKS}.detections.tags",
        f"{MASKS}.detections.{RELEASE_MASK}",
    ]
    rows_global, rows_local = [], []
    for fp, oi_id, w, h, labs, bbs, tags, mlabs, mbbs, mtags, mpaths in zip(*kept.values(fields)):
        image = paths.rel(fp)
        for lab, bb, tg in zip(labs or [], bbs or [], tags or []):
            if "global" in tg:
                rows_global.append(_row(image, oi_id, w, h, lab, bb, None))
            if "local" in tg:
                rows_local.append(_row(image, oi_id, w, h, lab, bb, None))
        for lab, bb, tg, mp in zip(mlabs or [], mbbs or [], mtags or [], mpaths or []):
            if "local" in tg and mp is not None:
                rows_local.append(_row(image, oi_id, w, h, lab, bb, mp))
    key = lambda r: (r["image_id"], r["box"], r["label"], r["mask"] or "")  # noqa: E731
    return sorted(rows_global, key=key), sorted(rows_local, key=key)


def _row(image: str, oi_id: str, w: int, h: int, label: str, bb, mask: str | None) -> dict:
    """One manifest row: the image, its box in pixels, the label, the Open Images ImageID, the mask (or None)."""
    return {"image": image, "box": pixel_box(bb, w, h), "label": label, "image_id": oi_id, "mask": mask}

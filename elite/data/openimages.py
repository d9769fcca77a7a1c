"""Reading a local copy of an Open Images split and writing it in FiftyOne's split layout.

Two input layouts are understood (`find_release`):

* the official release, as downloaded from the Open Images site::

      <root>/<split>-annotations-bbox.csv                   ImageID,Source,LabelName,Confidence,XMin,...
      <root>/<split>-annotations-object-segmentation.csv    MaskPath,ImageID,LabelName,BoxID,BoxXMin,...
      <root>/oidv7-class-descriptions-boxable.csv           LabelName,DisplayName (V6 name and no header also work)
      <root>/oidv7-classes-segmentation.txt                 optional, one LabelName a line
      <root>/bbox_labels_600_hierarchy.json                 optional
      <root>/<split>/<ImageID>.jpg
      <root>/<split>-masks/<MaskPath>  or  <root>/<split>-masks-<0-f>.zip   (the release's mask archives)

* FiftyOne's split layout (what `foz.load_zoo_dataset("open-images-v7")` writes, and what
  `fo.types.OpenImagesV7Dataset` imports): `data/`, `labels/{detections,segmentations}.csv`,
  `labels/masks/<C>/`, `metadata/{classes.csv,segmentation_classes.csv,hierarchy.json}`.

`import_release` checks every row (ids and mask names that would leave their folder, unknown
classes, boxes outside [0, 1], rows whose image or mask is missing, masks whose size does not fit
their image) and writes the rows that pass, with the images and masks hard-linked (or copied), in
FiftyOne's split layout. Rejected rows are counted per reason, never fatal.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import threading
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from elite.errors import EliteError

BOX_COLUMNS = [
    "ImageID",
    "Source",
    "LabelName",
    "Confidence",
    "XMin",
    "XMax",
    "YMin",
    "YMax",
    "IsOccluded",
    "IsTruncated",
    "IsGroupOf",
    "IsDepiction",
    "IsInside",
]
SEG_COLUMNS = [
    "MaskPath",
    "ImageID",
    "LabelName",
    "BoxID",
    "BoxXMin",
    "BoxXMax",
    "BoxYMin",
    "BoxYMax",
    "PredictedIoU",
    "Clicks",
]
BOX_KEYS = ("XMin", "XMax", "YMin", "YMax")
SEG_BOX_KEYS = ("BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax")
FLAG_COLUMNS = ["IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside"]
CLASS_FILES = ["oidv7-class-descriptions-boxable.csv", "class-descriptions-boxable.csv"]
SEG_CLASS_FILES = ["oidv7-classes-segmentation.txt", "classes-segmentation.txt"]
HIERARCHY_FILE = "bbox_labels_600_hierarchy.json"
ROOT_LABEL = "/m/0bl9f"  # "Entity", the root of the official hierarchy

# An ImageID or MaskPath is a plain file name: anything else (a path, "..") is rejected.
IMAGE_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,127}$")
MASK_NAME = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,200}\.png$")


@dataclass
class Release:
    """Where the files of one split are (either layout)."""

    root: Path
    layout: str  # "official" | "fiftyone"
    bbox_csv: Path
    seg_csv: Path
    classes_csv: Path
    images_dir: Path
    seg_classes: Path | None = None
    hierarchy: Path | None = None
    masks_dir: Path | None = None  # official: <split>-masks/ (flat); fiftyone: labels/masks/ (<C>/ subfolders)
    mask_zips: list[Path] = field(default_factory=list)

    def mask_file(self, image_id: str, name: str) -> Path | None:
        if self.masks_dir is None:
            return None
        path = self.masks_dir / image_id[0].upper() / name if self.layout == "fiftyone" else self.masks_dir / name
        return path if path.is_file() else None


def find_release(root: str | Path, split: str) -> Release:
    """Recognise the layout of a local Open Images copy, or a one-line error saying what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise EliteError(
            f"download.source: {root} is not a directory (give a local Open Images copy, 'zoo' or 'synthetic')"
        )
    if (root / "labels" / "detections.csv").is_file():
        return _fiftyone_layout(root)
    if (root / split / "labels" / "detections.csv").is_file():
        return _fiftyone_layout(root / split)
    bbox = root / f"{split}-annotations-bbox.csv"
    seg = root / f"{split}-annotations-object-segmentation.csv"
    classes = next((root / n for n in CLASS_FILES if (root / n).is_file()), None)
    missing = [p.name for p in (bbox, seg) if not p.is_file()] + ([] if classes else [CLASS_FILES[0]])
    if not (root / split).is_dir():
        missing.append(f"{split}/ (the images)")
    if missing:
        raise EliteError(
            f"download.source: {root} is not an Open Images {split} copy: missing {', '.join(missing)} "
            f"(official release layout, see docs/data.md)"
        )
    zips = sorted(root.glob(f"{split}-masks-*.zip"))
    masks_dir = root / f"{split}-masks"
    return Release(
        root=root,
        layout="official",
        bbox_csv=bbox,
        seg_csv=seg,
        classes_csv=classes,
        images_dir=root / split,
        seg_classes=next((root / n for n in SEG_CLASS_FILES if (root / n).is_file()), None),
        hierarchy=root / HIERARCHY_FILE if (root / HIERARCHY_FILE).is_file() else None,
        masks_dir=masks_dir if masks_dir.is_dir() else None,
        mask_zips=zips,
    )


def _fiftyone_layout(split_dir: Path) -> Release:
    meta = split_dir / "metadata"
    for need in (split_dir / "labels" / "segmentations.csv", meta / "classes.csv", split_dir / "data"):
        if not need.exists():
            raise EliteError(
                f"download.source: {split_dir} looks like FiftyOne's Open Images layout but lacks {need.name}"
            )
    return Release(
        root=split_dir,
        layout="fiftyone",
        bbox_csv=split_dir / "labels" / "detections.csv",
        seg_csv=split_dir / "labels" / "segmentations.csv",
        classes_csv=meta / "classes.csv",
        images_dir=split_dir / "data",
        seg_classes=meta / "segmentation_classes.csv" if (meta / "segmentation_classes.csv").is_file() else None,
        hierarchy=meta / "hierarchy.json" if (meta / "hierarchy.json").is_file() else None,
        masks_dir=split_dir / "labels" / "masks",
    )


def read_classes(path: Path) -> dict[str, str]:
    """LabelName -> DisplayName from a class-descriptions CSV (with or without its header row)."""
    classes: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or (i == 0 and row[:2] == ["LabelName", "DisplayName"]):
                continue
            if len(row) < 2 or not row[0].strip():
                raise EliteError(f"{path}: line {i + 1} is not 'LabelName,DisplayName'")
            classes[row[0].strip()] = row[1].strip()
    if not classes:
        raise EliteError(f"{path}: no classes")
    return classes


def _rows(path: Path, columns: list[str]):
    """The open file and its DictReader, once its header has `columns` (the caller closes the file)."""
    f = open(path, newline="", encoding="utf-8")  # noqa: SIM115 (returned open: the caller reads it in `with f`)
    reader = csv.DictReader(f)
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        f.close()
        raise EliteError(
            f"{path}: missing column(s) {', '.join(missing)} (expected the official header: {','.join(columns)})"
        )
    return f, reader


def _unit_box(row: dict, keys: tuple[str, str, str, str]) -> bool:
    try:
        x0, x1, y0, y1 = (float(row[k]) for k in keys)
    except (TypeError, ValueError):
        return False
    return 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header, or None when it cannot be read."""
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


class _MaskSource:
    """Mask PNGs by MaskPath from a folder or from the release's zip archives."""

    def __init__(self, release: Release):
        self.release = release
        self.members: dict[str, tuple[Path, str]] = {}  # MaskPath -> (archive, member)
        for z in release.mask_zips:
            with zipfile.ZipFile(z) as zf:
                for member in zf.namelist():
                    self.members.setdefault(member.rsplit("/", 1)[-1], (z, member))
        self._local = threading.local()  # one open ZipFile per archive and thread

    def exists(self, image_id: str, name: str) -> bool:
        return self.release.mask_file(image_id, name) is not None or name in self.members

    def read(self, image_id: str, name: str) -> bytes:
        path = self.release.mask_file(image_id, name)
        if path is not None:
            return path.read_bytes()
        archive, member = self.members[name]
        handles = self._local.__dict__.setdefault("zips", {})
        if archive not in handles:
            handles[archive] = zipfile.ZipFile(archive)
        return handles[archive].read(member)

    def link(self, image_id: str, name: str, dest: Path) -> None:
        path = self.release.mask_file(image_id, name)
        if path is not None:
            link_or_copy(path, dest)
        else:
            dest.write_bytes(self.read(image_id, name))


def link_or_copy(src: Path, dest: Path) -> None:
    """Hard-link `src` to `dest` (no extra space on the same filesystem), or copy it."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _fit_mask(data: bytes, size: tuple[int, int] | None, tolerance: float) -> tuple[str, bytes | None]:
    """('ok', None) when the mask has the image's size, ('resized', png) when only the scale differs,
    ('wrong_size' | 'unreadable', None) otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if size is None or img.size == size:
                return "ok", None
            (mw, mh), (w, h) = img.size, size
            if abs(mw / mh - w / h) > tolerance * (w / h):
                return "wrong_size", None
            out = io.BytesIO()
            img.convert("L").resize(size, Image.NEAREST).save(out, format="PNG")
            return "resized", out.getvalue()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, ZeroDivisionError):
        return "unreadable", None


@dataclass
class ImportReport:
    images: int = 0
    boxes: int = 0
    masks: int = 0
    classes: int = 0
    masks_resized: int = 0
    unreadable_headers: int = 0
    rejected: Counter = field(default_factory=Counter)  # "<file kind>:<reason>" -> rows

    def as_dict(self) -> dict:
        return {
            "images": self.images,
            "boxes": self.boxes,
            "masks": self.masks,
            "classes": self.classes,
            "masks_resized": self.masks_resized,
            "images_unreadable_header": self.unreadable_headers,
            "rejected_rows": dict(sorted(self.rejected.items())),
            "rejected_total": sum(self.rejected.values()),
        }


def import_release(release: Release, out: Path, workers: int, mask_tolerance: float) -> ImportReport:
    """Validate `release` and write it to `out` in FiftyOne's split layout; returns the counts."""
    report = ImportReport()
    classes = read_classes(release.classes_csv)
    jpegs = [p for p in sorted(release.images_dir.iterdir()) if p.suffix.lower() == ".jpg"]
    images = {p.stem: p for p in jpegs if IMAGE_ID.match(p.stem)}
    if len(images) < len(jpegs):
        report.rejected["image_files:bad_name"] = len(jpegs) - len(images)
    for sub in ("data", "labels/masks", "metadata"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for image_id, path in tqdm(images.items(), desc="images", unit="img", leave=False):
        link_or_copy(path, out / "data" / f"{image_id}.jpg")
    report.images = len(images)

    with ThreadPoolExecutor(workers) as pool:
        sizes = dict(zip(images, pool.map(image_size, images.values())))
    report.unreadable_headers = sum(1 for s in sizes.values() if s is None)

    used: set[str] = set()
    f, reader = _rows(release.bbox_csv, BOX_COLUMNS)
    with f, open(out / "labels" / "detections.csv", "w", newline="", encoding="utf-8") as g:
        writer = csv.DictWriter(g, BOX_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in tqdm(reader, desc="boxes", unit="row", leave=False):
            reason = _check_row(row, classes, images, BOX_KEYS, is_mask=False)
            if reason:
                report.rejected[f"boxes:{reason}"] += 1
                continue
            writer.writerow(row)
            used.add(row["LabelName"])
            report.boxes += 1

    f, reader = _rows(release.seg_csv, SEG_COLUMNS)
    with f:
        seg_rows = []
        for row in reader:
            reason = _check_row(row, classes, images, SEG_BOX_KEYS, is_mask=True)
            if reason:
                report.rejected[f"masks:{reason}"] += 1
            else:
                seg_rows.append({k: row[k] for k in SEG_COLUMNS})
    masks = _MaskSource(release)

    def place(row: dict) -> str:
        image_id, name = row["ImageID"], row["MaskPath"]
        if not masks.exists(image_id, name):
            return "missing_mask"
        status, resized = _fit_mask(masks.read(image_id, name), sizes[image_id], mask_tolerance)
        if status in ("wrong_size", "unreadable"):
            return f"mask_{status}"
        dest = out / "labels" / "masks" / image_id[0].upper() / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if resized is not None:
            dest.write_bytes(resized)
        else:
            masks.link(image_id, name, dest)
        return status

    with ThreadPoolExecutor(workers) as pool:
        statuses = list(tqdm(pool.map(place, seg_rows), total=len(seg_rows), desc="masks", unit="mask", leave=False))
    with open(out / "labels" / "segmentations.csv", "w", newline="", encoding="utf-8") as g:
        writer = csv.DictWriter(g, SEG_COLUMNS)
        writer.writeheader()
        for row, status in zip(seg_rows, statuses):
            if status in ("ok", "resized"):
                writer.writerow(row)
                used.add(row["LabelName"])
                report.masks += 1
                report.masks_resized += status == "resized"
            else:
                report.rejected[f"masks:{status}"] += 1

    _write_metadata(release, out / "metadata", classes, images)
    report.classes = len(used)
    return report


def _check_row(row: dict, classes: dict, images: dict, box_keys: tuple[str, ...], is_mask: bool) -> str | None:
    """The reason to reject a box (is_mask False) or segmentation row, or None."""
    if not IMAGE_ID.match(row["ImageID"] or ""):
        return "bad_image_id"
    if is_mask and not MASK_NAME.match(row["MaskPath"] or ""):
        return "bad_mask_path"
    if row["LabelName"] not in classes:
        return "unknown_class"
    if not _unit_box(row, box_keys):
        return "bad_box"
    if not is_mask and any(row[c] not in ("0", "1", "-1") for c in FLAG_COLUMNS):
        return "bad_flag"
    if row["ImageID"] not in images:
        return "missing_image"
    return None


def _write_metadata(release: Release, meta: Path, classes: dict[str, str], images: dict) -> None:
    with open(meta / "classes.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(classes.items())  # FiftyOne's classes.csv has no header
    if release.seg_classes is not None:
        seg = [line.strip() for line in release.seg_classes.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        with open(meta.parent / "labels" / "segmentations.csv", newline="", encoding="utf-8") as f:
            seg = sorted({row["LabelName"] for row in csv.DictReader(f)})
    (meta / "segmentation_classes.csv").write_text("".join(f"{c}\n" for c in seg if c in classes), encoding="utf-8")
    with open(meta / "image_ids.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageID"])
        writer.writerows([i] for i in images)
    (meta / "hierarchy.json").write_text(json.dumps(_hierarchy(release, classes), indent=1), encoding="utf-8")


def _hierarchy(release: Release, classes: dict[str, str]) -> dict:
    """The class hierarchy with display names (FiftyOne's form); flat when the copy has none."""
    if release.hierarchy is None:
        return {"LabelName": "Entity", "Subcategory": [{"LabelName": name} for name in sorted(set(classes.values()))]}
    try:
        tree = json.loads(release.hierarchy.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EliteError(f"{release.hierarchy}: not valid JSON ({exc})") from None
    if release.layout == "fiftyone":
        return tree
    names = {ROOT_LABEL: "Entity", **classes}

    def rename(node: dict) -> dict:
        out = {"LabelName": names.get(node.get("LabelName"), node.get("LabelName"))}
        for key in ("Subcategory", "Part"):
            if key in node:
                out[key] = [rename(child) for child in node[key]]
        return out

    return rename(tree)

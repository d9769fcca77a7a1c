"""Helpers of the data-stage tests: damaging a generated release, a DreamBench fixture, reading outputs."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT = "test"


def damage_release(root: Path) -> dict:
    """Damage a generated release the ways a real copy can be damaged; returns what was done."""
    images = sorted((root / SPLIT).glob("*.jpg"))
    corrupt, truncated = images[1], images[2]
    corrupt.write_bytes(b"this is not a JPEG" * 64)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 3])

    seg_csv = root / f"{SPLIT}-annotations-object-segmentation.csv"
    with open(seg_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    bad_ids = {corrupt.stem, truncated.stem}
    masked = [r for r in rows if r["ImageID"] not in bad_ids]
    # unzip the release's mask archives into <split>-masks/ (the other accepted form), then damage two
    masks_dir = root / f"{SPLIT}-masks"
    masks_dir.mkdir()
    for z in sorted(root.glob(f"{SPLIT}-masks-*.zip")):
        with zipfile.ZipFile(z) as zf:
            zf.extractall(masks_dir)
        z.unlink()
    wrong, half = masked[0], masked[1]
    with Image.open(masks_dir / wrong["MaskPath"]) as m:
        w, h = m.size
    Image.new("L", (w + 37, max(h // 3, 1)), 255).save(masks_dir / wrong["MaskPath"])  # another aspect: rejected
    with Image.open(masks_dir / half["MaskPath"]) as m:
        half_mask = np.asarray(m)
        m.resize((m.width // 2, m.height // 2), Image.NEAREST).save(masks_dir / half["MaskPath"])
    escape_mask = dict(masked[2], MaskPath="../../outside.png")
    rows += [escape_mask]
    with open(seg_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)

    bbox_csv = root / f"{SPLIT}-annotations-bbox.csv"
    with open(bbox_csv, newline="") as f:
        boxes = list(csv.DictReader(f))
    extra = [
        dict(boxes[0], ImageID="../../../etc/passwd"),
        dict(boxes[0], ImageID="../" + boxes[0]["ImageID"]),
        dict(boxes[0], LabelName="/m/notaclass"),
        dict(boxes[0], XMax="1.5"),
        dict(boxes[0], ImageID="0123abcdef999999"),
    ]
    with open(bbox_csv, "a", newline="") as f:
        csv.DictWriter(f, list(boxes[0])).writerows(extra)
    return {
        "corrupt": corrupt.stem,
        "truncated": truncated.stem,
        "wrong_size_mask": wrong["MaskPath"],
        "half_mask": half["MaskPath"],
        "half_mask_full": half_mask,
        "rows": len(rows) - 1,
    }


def write_subjects(root: Path) -> list[dict]:
    """A DreamBench subjects.json fixture (two subjects, two images each) in the stage contract format."""
    subjects = []
    for k, name in enumerate(["red_disc", "blue_box"]):
        images = []
        for i in range(2):
            yy, xx = np.mgrid[: 96 + 8 * i, :80]
            rgb = np.full((96 + 8 * i, 80, 3), (30, 120, 60), np.uint8)
            obj = ((yy - 48) ** 2 + (xx - 40) ** 2 < 25**2) if k == 0 else ((abs(yy - 50) < 20) & (abs(xx - 40) < 18))
            rgb[obj] = (220, 40, 40) if k == 0 else (40, 40, 220)
            path = root / "data" / "dreambench" / name / f"{i:02d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(path, quality=95)
            images.append(path.relative_to(root).as_posix())
        subjects.append(
            {"subject": name, "class": "toy", "live": False, "images": images, "prompts": ["a S* on a table"]}
        )
    (root / "data" / "dreambench" / "subjects.json").write_text(json.dumps(subjects))
    return subjects


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size

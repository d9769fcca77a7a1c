"""The Open Images local-copy parser and the generated release (no database needed)."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import pytest
from data_helpers import SPLIT, damage_release
from PIL import Image

from elite.data.openimages import BOX_COLUMNS, SEG_COLUMNS, find_release, import_release, read_classes
from elite.data.synth import write_synthetic_release
from elite.errors import EliteError


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture()
def release(tmp_path, cfgs):
    d = cfgs[0]
    return write_synthetic_release(tmp_path / "rel", SPLIT, 10, d.synthetic_size, d.synthetic_objects, 0.7, seed=3)


def test_generated_release_has_the_official_layout_and_exact_labels(release):
    assert (release / "test-annotations-bbox.csv").read_text().splitlines()[0] == ",".join(BOX_COLUMNS)
    assert (release / "test-annotations-object-segmentation.csv").read_text().splitlines()[0] == ",".join(SEG_COLUMNS)
    assert read_classes(release / "oidv7-class-descriptions-boxable.csv")["/m/0bt9lr"] == "Dog"
    images = sorted((release / SPLIT).glob("*.jpg"))
    assert len(images) == 10
    for p in images:
        with Image.open(p) as img:
            assert img.format == "JPEG" and len(p.stem) == 16
    boxes = rows(release / "test-annotations-bbox.csv")
    per_image = {}
    for b in boxes:
        per_image.setdefault(b["ImageID"], set()).add(b["LabelName"])
    assert max(len(v) for v in per_image.values()) >= 2  # several classes in one scene
    # the last image is a byte copy of the first
    ids = [b["ImageID"] for b in boxes]
    first, last = ids[0], ids[-1]
    assert (release / SPLIT / f"{first}.jpg").read_bytes() == (release / SPLIT / f"{last}.jpg").read_bytes()
    # masks live in per-first-digit zip archives; each box is exactly the bounding box of its mask
    segs = rows(release / "test-annotations-object-segmentation.csv")
    assert segs
    archives = {z.name: zipfile.ZipFile(z) for z in release.glob("test-masks-*.zip")}
    for s in segs:
        zf = archives[f"test-masks-{s['MaskPath'][0]}.zip"]
        with zf.open(s["MaskPath"]) as f:
            mask = np.asarray(Image.open(f)) > 0
        h, w = mask.shape
        with Image.open(release / SPLIT / f"{s['ImageID']}.jpg") as img:
            assert img.size == (w, h)
        ys, xs = np.nonzero(mask)
        assert round(float(s["BoxXMin"]) * w) == xs.min() and round(float(s["BoxXMax"]) * w) == xs.max() + 1
        assert round(float(s["BoxYMin"]) * h) == ys.min() and round(float(s["BoxYMax"]) * h) == ys.max() + 1
        assert any(
            b["ImageID"] == s["ImageID"] and b["XMin"] == s["BoxXMin"] and b["YMax"] == s["BoxYMax"] for b in boxes
        )


def test_parser_rejects_damage_and_keeps_everything_else(release, tmp_path):
    n_boxes = len(rows(release / "test-annotations-bbox.csv"))
    damage = damage_release(release)
    rel = find_release(release, SPLIT)
    assert rel.layout == "official" and rel.masks_dir is not None and not rel.mask_zips
    out = tmp_path / "out" / SPLIT
    report = import_release(rel, out, workers=2, mask_tolerance=0.02)

    assert report.rejected == {
        "boxes:bad_image_id": 2,
        "boxes:unknown_class": 1,
        "boxes:bad_box": 1,
        "boxes:missing_image": 1,
        "masks:bad_mask_path": 1,
        "masks:mask_wrong_size": 1,
    }
    assert report.images == 10 and report.boxes == n_boxes
    assert report.masks == damage["rows"] - 1 and report.masks_resized == 1
    assert report.unreadable_headers == 1  # the corrupt file; the truncated one still has its header
    kept = rows(out / "labels" / "segmentations.csv")
    assert damage["wrong_size_mask"] not in {r["MaskPath"] for r in kept}
    assert all(".." not in r["MaskPath"] for r in kept)
    assert all(".." not in r["ImageID"] for r in rows(out / "labels" / "detections.csv"))
    # nothing was written outside the output folder
    assert not (tmp_path / "outside.png").exists() and not (release.parent / "outside.png").exists()
    # the half-size mask was scaled back to its image's size, nearest-neighbour
    half = damage["half_mask"]
    with Image.open(out / "labels" / "masks" / half[0].upper() / half) as m:
        restored = np.asarray(m) > 0
    original = damage["half_mask_full"] > 0
    assert restored.shape == original.shape
    assert (restored == original).mean() > 0.97
    # FiftyOne's split layout
    assert read_classes(out / "metadata" / "classes.csv") == read_classes(
        release / "oidv7-class-descriptions-boxable.csv"
    )
    assert (out / "metadata" / "hierarchy.json").is_file() and (
        out / "metadata" / "segmentation_classes.csv"
    ).is_file()
    for r in kept:
        assert (out / "labels" / "masks" / r["ImageID"][0].upper() / r["MaskPath"]).is_file()
    assert sorted(p.name for p in (out / "data").iterdir()) == sorted(p.name for p in (release / SPLIT).iterdir())


def test_fiftyone_layout_is_read_back_unchanged(release, tmp_path):
    first = tmp_path / "first" / SPLIT
    import_release(find_release(release, SPLIT), first, 2, 0.02)
    rel = find_release(tmp_path / "first", SPLIT)
    assert rel.layout == "fiftyone"
    second = tmp_path / "second" / SPLIT
    report = import_release(rel, second, 2, 0.02)
    assert not report.rejected
    for name in (
        "labels/detections.csv",
        "labels/segmentations.csv",
        "metadata/classes.csv",
        "metadata/hierarchy.json",
    ):
        assert (first / name).read_text() == (second / name).read_text()


def test_layout_errors_name_the_missing_piece(release, tmp_path):
    with pytest.raises(EliteError, match="not a directory"):
        find_release(tmp_path / "nope", SPLIT)
    (release / "test-annotations-object-segmentation.csv").unlink()
    with pytest.raises(EliteError, match="test-annotations-object-segmentation.csv"):
        find_release(release, SPLIT)
    with pytest.raises(EliteError, match="validation-annotations-bbox.csv"):
        find_release(release, "validation")


def test_bad_header_is_one_line_error(release, tmp_path):
    path = release / "test-annotations-bbox.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0].replace("XMax", "X_Max")] + lines[1:]) + "\n")
    with pytest.raises(EliteError, match=r"missing column\(s\) XMax") as err:
        import_release(find_release(release, SPLIT), tmp_path / "o" / SPLIT, 1, 0.02)
    assert "\n" not in str(err.value)

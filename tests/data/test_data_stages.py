"""download -> curate -> mask on a damaged local Open Images copy, with real FiftyOne and the tiny SAM.

Expected manifests are recomputed here from the release CSVs and the image files (an independent
implementation of the rules), and compared with what the stages wrote.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from data_helpers import SPLIT, read_jsonl
from PIL import Image

from elite.data.openimages import read_classes

ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]*$")


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def mask_bool(path: Path) -> np.ndarray:
    with Image.open(path) as m:
        return np.asarray(m.convert("L")) >= 128


@pytest.fixture(scope="module")
def expected(pipeline_run):
    """Stage-1 and stage-2 samples computed straight from the release files and the smoke rules."""
    mirror, damage = pipeline_run["mirror"], pipeline_run["damage"]
    _, cur, _ = pipeline_run["cfgs"]
    names = read_classes(mirror / "oidv7-class-descriptions-boxable.csv")
    files = {p.stem: p for p in (mirror / SPLIT).glob("*.jpg")}
    bad = {damage["corrupt"], damage["truncated"]}
    by_hash = {}
    for image_id in sorted(files):
        if image_id not in bad:
            by_hash.setdefault(hashlib.sha256(files[image_id].read_bytes()).hexdigest(), []).append(image_id)
    kept = {ids[0] for ids in by_hash.values()}
    duplicates = {i for ids in by_hash.values() for i in ids[1:]}
    sizes = {i: Image.open(files[i]).size for i in kept}

    def valid(r, keys):
        if not ID.match(r["ImageID"]) or r["ImageID"] not in kept or r["LabelName"] not in names:
            return False
        x0, x1, y0, y1 = (float(r[k]) for k in keys)
        return 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1

    def px(r, keys):
        w, h = sizes[r["ImageID"]]
        x0, x1, y0, y1 = (float(r[k]) for k in keys)
        return (round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h))

    def stage2_size_ok(r, keys):
        w, h = sizes[r["ImageID"]]
        x0, x1, y0, y1 = (float(r[k]) for k in keys)
        bw, bh = (x1 - x0) * w, (y1 - y0) * h
        return bw >= cur.min_side and bh >= cur.min_side and max(bw, bh) <= cur.max_aspect * min(bw, bh)

    box_keys, seg_keys = ("XMin", "XMax", "YMin", "YMax"), ("BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax")
    boxes = [r for r in csv_rows(mirror / "test-annotations-bbox.csv") if valid(r, box_keys)]
    segs = [
        r
        for r in csv_rows(mirror / "test-annotations-object-segmentation.csv")
        if valid(r, seg_keys) and ".." not in r["MaskPath"] and r["MaskPath"] != damage["wrong_size_mask"]
    ]
    single = [r for r in boxes if r["IsGroupOf"] == "0" and r["IsDepiction"] == "0"]
    area = lambda r: (float(r["XMax"]) - float(r["XMin"])) * (float(r["YMax"]) - float(r["YMin"]))  # noqa: E731
    stage1 = sorted(
        (r["ImageID"], px(r, box_keys), names[r["LabelName"]])
        for r in single
        if cur.min_area <= area(r) <= cur.max_area
    )
    stage2_masks = sorted(
        (r["ImageID"], px(r, seg_keys), names[r["LabelName"]], r["MaskPath"])
        for r in segs
        if stage2_size_ok(r, seg_keys)
    )

    def iou(a, b):
        ix = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[2], b[2]))
        inter = ix * iy
        return inter / ((a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2]) - inter)

    def covered(r):
        box = [float(r[k]) for k in box_keys]
        return any(
            s["ImageID"] == r["ImageID"]
            and s["LabelName"] == r["LabelName"]
            and iou(box, [float(s[k]) for k in seg_keys]) >= cur.match_iou
            for s in segs
        )

    stage2_boxes = sorted(
        (r["ImageID"], px(r, box_keys), names[r["LabelName"]])
        for r in single
        if stage2_size_ok(r, box_keys) and not covered(r)
    )
    return {
        "kept": kept,
        "duplicates": duplicates,
        "bad": bad,
        "stage1": stage1,
        "stage2_masks": stage2_masks,
        "stage2_boxes": stage2_boxes,
        "boxes": boxes,
        "segs": segs,
        "sizes": sizes,
    }


def test_download_metrics_and_fiftyone_dataset(pipeline_run, mongod):
    import fiftyone as fo

    m, repo = pipeline_run["download"], pipeline_run["repo"]
    assert json.loads((repo / "metrics" / "download.json").read_text()) == m
    assert m["images"] == 24 and m["classes"] >= 3
    assert m["rejected_rows"] == {
        "boxes:bad_box": 1,
        "boxes:bad_image_id": 2,
        "boxes:missing_image": 1,
        "boxes:unknown_class": 1,
        "masks:bad_mask_path": 1,
        "masks:mask_wrong_size": 1,
    }
    assert m["masks_resized"] == 1
    ds = fo.load_dataset("elite-data-tests")
    assert ds.persistent and len(ds) == m["images"] == m["fiftyone_samples"]
    assert ds.count("detections.detections") == m["boxes"] and ds.count("segmentations.detections") == m["masks"]
    assert sorted(ds.distinct("open_images_id")) == sorted(
        p.stem for p in (repo / "data/openimages/test/data").iterdir()
    )
    paths = [p for per in ds.values("segmentations.detections.release_mask") if per for p in per]
    assert len(paths) == m["masks"] and None not in paths
    assert all((repo / p).is_file() and p.startswith("data/openimages/test/labels/masks/") for p in paths)
    info = json.loads((repo / "data/openimages/release.json").read_text())
    assert info["dataset"] == "elite-data-tests" and ds.info["elite_stamp"] == info["stamp"]


def test_curated_manifests_match_the_rules(pipeline_run, expected):
    repo = pipeline_run["repo"]
    glob_rows = read_jsonl(repo / "data/curated/global.jsonl")
    local_rows = read_jsonl(repo / "data/curated/local.jsonl")
    for r in glob_rows + local_rows:
        assert set(r) == {"image", "box", "label", "image_id", "mask"}
        assert r["image"] == f"data/openimages/test/data/{r['image_id']}.jpg" and (repo / r["image"]).is_file()
    assert sorted((r["image_id"], tuple(r["box"]), r["label"]) for r in glob_rows) == expected["stage1"]
    assert all(r["mask"] is None for r in glob_rows)
    with_mask = sorted(
        (r["image_id"], tuple(r["box"]), r["label"], Path(r["mask"]).name) for r in local_rows if r["mask"]
    )
    assert with_mask == expected["stage2_masks"]
    without = sorted((r["image_id"], tuple(r["box"]), r["label"]) for r in local_rows if r["mask"] is None)
    assert without == expected["stage2_boxes"]
    assert expected["stage1"] and expected["stage2_masks"] and expected["stage2_boxes"]  # every path has samples
    # boxes are exact: a release mask's pixels span exactly its box
    for r in local_rows:
        if r["mask"]:
            ys, xs = np.nonzero(mask_bool(repo / r["mask"]))
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == r["box"] or Path(
                r["mask"]
            ).name == pipeline_run["damage"]["half_mask"]


def test_curate_metrics_and_fiftyone_tags(pipeline_run, expected, mongod):
    import fiftyone as fo

    m, repo = pipeline_run["curate"], pipeline_run["repo"]
    assert json.loads((repo / "metrics" / "curate.json").read_text()) == m
    assert m["images_dropped"] == {"unreadable": 2, "exif_rotated": 0, "duplicate": len(expected["duplicates"])}
    assert m["images_kept"] == len(expected["kept"]) and m["global"] == len(expected["stage1"])
    assert m["boxes_dropped"]["group_of"] > 0 and m["boxes_dropped"]["depiction"] > 0
    assert m["boxes_dropped"]["small_area"] + m["boxes_dropped"]["large_area"] > 0
    assert m["masks_dropped"]["small_box"] + m["masks_dropped"]["aspect"] > 0
    ds = fo.load_dataset("elite-data-tests")
    unreadable = set(ds.match_tags("drop:unreadable").values("open_images_id"))
    assert unreadable == expected["bad"]
    assert set(ds.match_tags("drop:duplicate").values("open_images_id")) == expected["duplicates"]
    tags = ds.count_label_tags(label_fields=["detections"])
    assert tags["global"] == m["global"] and tags["drop:group_of"] == m["boxes_dropped"]["group_of"]
    assert ds.count_label_tags(label_fields=["segmentations"])["local"] == m["local_release_masks"]
    assert {"curated-global", "curated-local", "dropped-images", "dropped-labels"} <= set(ds.list_saved_views())
    assert len(ds.load_saved_view("dropped-images")) == 2 + len(expected["duplicates"])


def test_curate_rerun_is_idempotent_and_reimports_a_missing_dataset(pipeline_run, mongod):
    import fiftyone as fo

    from elite.data.curate import run_curate

    repo, (_, cur, _) = pipeline_run["repo"], pipeline_run["cfgs"]
    before = {n: (repo / "data/curated" / n).read_text() for n in ("global.jsonl", "local.jsonl")}
    with contextlib.chdir(repo):
        again = run_curate(cur)
        assert again == pipeline_run["curate"]
        fo.delete_dataset("elite-data-tests")
        fresh = run_curate(cur)  # a machine with data/openimages from DVC but no FiftyOne database
    assert fresh == pipeline_run["curate"]
    assert fo.dataset_exists("elite-data-tests")
    assert {n: (repo / "data/curated" / n).read_text() for n in before} == before


def test_mask_stage_outputs(pipeline_run):
    repo, m = pipeline_run["repo"], pipeline_run["mask"]
    assert json.loads((repo / "metrics" / "mask.json").read_text()) == m
    curated = read_jsonl(repo / "data/curated/local.jsonl")
    rows = read_jsonl(repo / "data/masks/local.jsonl")
    assert len(rows) + m["dropped_empty"] == len(curated) and m["rows"] == len(rows)
    unique_boxes = {(r["image_id"], tuple(r["box"])) for r in curated}
    assert m["masks_made"] == len(unique_boxes) and m["images_encoded"] == len({r["image_id"] for r in curated})
    assert m["images_per_s"] > 0
    ious = []
    for r in rows:
        size = Image.open(repo / r["image"]).size
        sam_file = repo / "data/masks/sam" / r["image_id"][:2] / f"{r['image_id']}_{'_'.join(map(str, r['box']))}.png"
        sam = mask_bool(sam_file)
        assert sam.shape == (size[1], size[0])
        if r["mask_source"] == "release":
            assert r["mask"].startswith("data/openimages/") and "sam_iou" in r
            release = mask_bool(repo / r["mask"])
            union = (sam | release).sum()
            assert r["sam_iou"] == pytest.approx((sam & release).sum() / union, abs=1e-6)
            ious.append(r["sam_iou"])
        else:
            assert r["mask_source"] == "sam" and repo / r["mask"] == sam_file and "sam_iou" not in r
            assert sam.sum() >= pipeline_run["cfgs"][2].min_mask_pixels
    assert m["release"] == len(ious) > 0 and m["sam"] == len(rows) - len(ious) > 0
    assert m["mean_iou_vs_release"] == pytest.approx(np.mean(ious), abs=1e-5)


def test_dreambench_concept_masks(pipeline_run):
    repo, m = pipeline_run["repo"], pipeline_run["mask"]
    extra = pipeline_run["cfgs"][2].concept_extra_images  # smoke: 1 image after the concept image
    assert m["dreambench_masks"] == m["dreambench_made"] == 2 * (1 + extra) and extra == 1
    for s in pipeline_run["subjects"]:
        names = [f"{s['subject']}.png", f"{s['subject']}.01.png"]  # concept_index 0, then image 01
        for name, image in zip(names, s["images"]):
            mask = mask_bool(repo / "data/masks/dreambench" / name)
            w, h = Image.open(repo / image).size
            assert mask.shape == (h, w) and mask.any()


@pytest.fixture()
def copy_repo(pipeline_run, tmp_path):
    """A copy of the scratch repository without the mask stage's outputs."""
    src = pipeline_run["repo"]
    for sub in ("data/openimages", "data/curated", "data/dreambench", "models/pretrained/sam"):
        shutil.copytree(src / sub, tmp_path / sub)
    return tmp_path


def test_shards_merge_to_the_unsharded_result_and_reruns_resume(pipeline_run, copy_repo):
    from elite.data.masking import run_mask

    mask_cfg = pipeline_run["cfgs"][2]
    with contextlib.chdir(copy_repo):
        assert run_mask(mask_cfg, (1, 3)) is None and run_mask(mask_cfg, (0, 3)) is None
        assert not Path("data/masks/local.jsonl").exists()
        merged = run_mask(mask_cfg, (2, 3))
    assert merged["shards"] == 3
    assert (copy_repo / "data/masks/local.jsonl").read_text() == (
        pipeline_run["repo"] / "data/masks/local.jsonl"
    ).read_text()
    whole = dict(pipeline_run["mask"])
    for key in ("images_per_s", "shards"):
        whole.pop(key), merged.pop(key)
    assert merged == whole
    # a killed run: some masks missing -> a rerun makes only those and leaves the rest untouched
    sam_files = sorted((copy_repo / "data/masks/sam").rglob("*.png"))
    for p in sam_files[:3]:
        p.unlink()
    (copy_repo / "data/masks/dreambench/red_disc.png").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in sam_files[3:]}
    with contextlib.chdir(copy_repo):
        rerun = run_mask(mask_cfg)
    assert rerun["masks_made"] == 3 and rerun["dreambench_made"] == 1
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert (copy_repo / "data/masks/local.jsonl").read_text() == (
        pipeline_run["repo"] / "data/masks/local.jsonl"
    ).read_text()


def test_empty_sam_masks_drop_unmasked_rows_and_fall_back_to_the_box(pipeline_run, copy_repo):
    from elite.data.masking import run_mask

    strict = pipeline_run["cfgs"][2].model_copy(update={"min_mask_pixels": 10**9, "concept_box": "image"})
    with contextlib.chdir(copy_repo):
        m = run_mask(strict)
    assert m["sam"] == 0 and m["dropped_empty"] == pipeline_run["mask"]["sam"]
    extra = pipeline_run["cfgs"][2].concept_extra_images  # 2 subjects x (concept image + extra images)
    assert m["release"] == pipeline_run["mask"]["release"] and m["dreambench_box_fallback"] == 2 * (1 + extra)
    mask = mask_bool(copy_repo / "data/masks/dreambench/blue_box.png")
    assert mask.all()  # concept_box image + empty SAM mask -> the whole-image box


def test_image_checks(tmp_path):
    from elite.data.curate import check_image

    rgb = np.random.default_rng(0).integers(0, 255, (40, 60, 3)).astype(np.uint8)
    good, rotated, cut = tmp_path / "good.jpg", tmp_path / "rotated.jpg", tmp_path / "cut.jpg"
    Image.fromarray(rgb).save(good, quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(rotated, quality=90, exif=exif)
    cut.write_bytes(good.read_bytes()[:-40])
    status, digest = check_image(str(good))
    assert status == "ok" and digest == hashlib.sha256(good.read_bytes()).hexdigest()
    assert check_image(str(rotated))[0] == "exif_rotated"
    assert check_image(str(cut))[0] == "unreadable"
    assert check_image(str(tmp_path / "missing.jpg")) == ("unreadable", None)


def test_a_split_without_masks_still_curates(cfgs, mongod, tmp_path):
    from elite.data.curate import run_curate
    from elite.data.download import run_download
    from elite.data.synth import write_synthetic_release

    download, cur, _ = cfgs
    src = write_synthetic_release(
        tmp_path / "src", SPLIT, 6, download.synthetic_size, download.synthetic_objects, 0.0, 1
    )
    (tmp_path / "repo").mkdir()
    with contextlib.chdir(tmp_path / "repo"):
        d = run_download(download.model_copy(update={"source": str(src), "dataset": "elite-data-tests-nomask"}))
        c = run_curate(cur)
    assert d["masks"] == 0 and d["boxes"] > 0
    assert c["local"] == c["local_boxes_without_mask"] > 0 and c["global"] > 0


def test_masks_of_another_sam_are_not_reused(pipeline_run, copy_repo):
    from elite.data.masking import run_mask
    from elite.data.sam import prepare_sam
    from elite.errors import EliteError

    mask_cfg = pipeline_run["cfgs"][2]
    with contextlib.chdir(copy_repo):
        run_mask(mask_cfg)
        prepare_sam("builtin", "tiny", Path("models/pretrained/sam"), seed=6)
        with pytest.raises(EliteError, match="made by another SAM"):
            run_mask(mask_cfg)
        prepare_sam("builtin", "tiny", Path("models/pretrained/sam"), seed=5)  # the one that made them
        assert run_mask(mask_cfg)["masks_made"] == 0
        with pytest.raises(EliteError, match="other mask.multimask"):
            run_mask(mask_cfg.model_copy(update={"multimask": False}))
        with pytest.raises(EliteError, match="data/masks/dreambench: .* other mask.concept_"):
            run_mask(mask_cfg.model_copy(update={"concept_box": "image"}))

"""The SAM side of the mask stage: the tiny model, saving/loading like the released checkpoints, prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from elite.data.masking import parse_shard, read_subjects
from elite.data.sam import CONFIG, BoxMasker, load_sam, prepare_sam
from elite.errors import EliteError


@pytest.fixture(scope="module")
def sam_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sam") / "sam"
    prepare_sam("builtin", "tiny", out, seed=5)
    return out


@pytest.fixture(scope="module")
def masker(sam_dir):
    return BoxMasker(load_sam(sam_dir, "cpu"), multimask=True)


def scene() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (120, 160, 3)).astype(np.uint8)
    img[20:80, 30:90] = (220, 30, 30)
    img[60:110, 100:150] = (30, 30, 220)
    return img


def test_tiny_sam_is_saved_and_loaded_like_the_release(sam_dir):
    config = json.loads((sam_dir / CONFIG).read_text())
    assert config["type"] == "tiny" and (sam_dir / config["checkpoint"]).is_file()
    state = torch.load(sam_dir / config["checkpoint"], map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    # the released checkpoints' key scheme (segment_anything.modeling.Sam)
    for key in (
        "image_encoder.patch_embed.proj.weight",
        "image_encoder.neck.0.weight",
        "prompt_encoder.point_embeddings.0.weight",
        "mask_decoder.iou_prediction_head.layers.0.weight",
    ):
        assert key in state
    model = load_sam(sam_dir, "cpu")
    assert sum(p.numel() for p in model.parameters()) < 100_000
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert not model.training


def test_a_checkpoint_file_is_copied_and_bad_sources_are_one_line_errors(sam_dir, tmp_path):
    out = tmp_path / "copied"
    prepare_sam(str(sam_dir / "sam_tiny.pth"), "tiny", out, seed=0)
    assert json.loads((out / CONFIG).read_text()) == {"type": "tiny", "checkpoint": "sam_tiny.pth"}
    assert (out / "sam_tiny.pth").read_bytes() == (sam_dir / "sam_tiny.pth").read_bytes()
    load_sam(out, "cpu")
    with pytest.raises(EliteError, match="not a file or an http"):
        prepare_sam(str(tmp_path / "missing.pth"), "vit_h", tmp_path / "x", seed=0)
    with pytest.raises(EliteError, match="cannot fetch http://127.0.0.1"):
        prepare_sam("http://127.0.0.1:9/sam_vit_h_4b8939.pth", "vit_h", tmp_path / "y", seed=0)
    with pytest.raises(EliteError, match="must be tiny"):
        prepare_sam("builtin", "vit_h", tmp_path / "z", seed=0)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_load_errors(sam_dir, tmp_path):
    with pytest.raises(EliteError, match="run `elite prepare-models` first"):
        load_sam(tmp_path, "cpu")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "sam_tiny.pth").write_bytes(b"garbage")
    (bad / CONFIG).write_text(json.dumps({"type": "tiny", "checkpoint": "sam_tiny.pth"}))
    with pytest.raises(EliteError, match="not a tiny SAM state dict"):
        load_sam(bad, "cpu")
    other = tmp_path / "other"
    other.mkdir()
    (other / "sam_tiny.pth").write_bytes((sam_dir / "sam_tiny.pth").read_bytes())
    (other / CONFIG).write_text(json.dumps({"type": "tiny", "checkpoint": "sam_tiny.pth", "arch": {"embed_dim": 48}}))
    with pytest.raises(EliteError, match="not a tiny SAM state dict"):
        load_sam(other, "cpu")
    (other / CONFIG).write_text(json.dumps({"type": "vit_x", "checkpoint": "sam_tiny.pth"}))
    with pytest.raises(EliteError, match="type must be one of"):
        load_sam(other, "cpu")


def test_batched_box_prompts_equal_one_box_at_a_time(masker):
    img = scene()
    boxes = [[30, 20, 90, 80], [100, 60, 150, 110], [0, 0, 160, 120]]
    masks, scores = masker(img, boxes)
    assert masks.shape == (3, 120, 160) and masks.dtype == bool and scores.shape == (3,)
    for i, box in enumerate(boxes):
        single, score = masker(img, [box])
        assert np.array_equal(single[0], masks[i]) and score[0] == pytest.approx(scores[i], abs=1e-5)
    assert not np.array_equal(masks[0], masks[1])  # different prompts, different masks


def test_dominant_box_of_the_automatic_generator(masker):
    img = scene()
    box = masker.dominant_box(img, points_per_side=4, pred_iou=0.0, stability=0.0, max_area=1.0)
    assert box is not None and 0 <= box[0] < box[2] <= 160 and 0 <= box[1] < box[3] <= 120
    assert masker.dominant_box(img, points_per_side=4, pred_iou=0.0, stability=0.0, max_area=1e-9) is None


def test_subjects_json_and_shard_errors(tmp_path):
    path = tmp_path / "subjects.json"
    path.write_text(json.dumps([{"subject": "dog", "images": ["a/00.jpg", "a/01.jpg"]}]))
    assert read_subjects(path, 1) == [("dog", ["a/01.jpg"])]
    assert read_subjects(path, 0, extra=1) == [("dog", ["a/00.jpg", "a/01.jpg"])]
    with pytest.raises(EliteError, match="concept_index 2 is out of range"):
        read_subjects(path, 2)
    with pytest.raises(EliteError, match="concept_index \\+ mask.concept_extra_images 2 is out of range"):
        read_subjects(path, 1, extra=1)
    path.write_text(json.dumps([{"subject": "../../evil", "images": ["x.jpg"]}]))
    with pytest.raises(EliteError, match="plain name"):
        read_subjects(path, 0)
    path.write_text("{")
    with pytest.raises(EliteError, match="not valid JSON"):
        read_subjects(path, 0)
    assert parse_shard(None) == (0, 1) and parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "a/b", "-1/2", "1"):
        with pytest.raises(EliteError, match="--shard"):
            parse_shard(bad)

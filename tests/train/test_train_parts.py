"""The pieces of the training stages: config, captions, manifests, draws, augmentations, losses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from train_helpers import REPO, load_yaml

from elite.config import load_params
from elite.errors import EliteError
from elite.images import padded_box
from elite.models.text import encode_with_words, tokenize_with_placeholder
from elite.train.augment import local_clip_augment
from elite.train.data import ClipSpec, DrawSampler, GlobalDataset, collate, read_manifest
from elite.train.losses import ldm_loss, local_value_regulariser
from elite.train.stages import encode_stage1_text
from elite.train.templates import TEMPLATES, caption


def test_paper_and_smoke_profiles():
    paper = load_params(REPO / "params.yaml", profile="paper")
    g, loc = paper.train_global, paper.train_local
    assert (g.learning_rate, g.batch_size * g.gradient_accumulation_steps, g.max_steps) == (1e-6, 16, 70000)
    assert (loc.learning_rate, loc.batch_size * loc.gradient_accumulation_steps, loc.max_steps) == (1e-5, 8, 65000)
    assert (g.reg_weight, loc.reg_weight, loc.local_scale, g.resolution) == (0.01, 1e-4, 1.0, 512)
    assert (g.adam_beta1, g.adam_beta2, g.adam_weight_decay, g.adam_epsilon, g.max_grad_norm) == (
        0.9,
        0.999,
        1e-2,
        1e-8,
        1.0,
    )
    assert (
        g.mixed_precision == "no"
        and g.scale_lr
        and loc.scale_lr
        and g.crop_pad == [10, 10]
        and loc.crop_pad == [10, 19]
    )
    assert loc.crop_box == "mask" and not load_params(REPO / "params.yaml", profile="paper").curate.drop_group_of
    smoke = load_params(REPO / "params.yaml", profile="smoke")
    assert smoke.train_global.resolution == 64 and smoke.train_global.max_steps < 100
    assert not smoke.train_global.scale_lr and not smoke.train_local.scale_lr  # the smoke rates are absolute


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("crop_pad", [12, 3], "train_global.crop_pad"),
        ("mixed_precision", "fp8", "train_global.mixed_precision"),
        ("resolution", 60, "train_global.resolution"),
        ("learning_rate", 0.0, "train_global.learning_rate"),
    ],
)
def test_bad_values_name_the_key(tmp_path, key, value, message):
    raw = load_yaml(REPO / "params.yaml")
    raw["train_global"][key] = value
    raw["train_global"].get("smoke", {}).pop(key, None)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(EliteError) as err:
        load_params(path, profile="smoke")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_27_templates_and_prefixes(smoke_pipeline):
    assert len(TEMPLATES) == len(set(TEMPLATES)) == 27
    assert caption(0) == "a photo of a S*"
    assert caption(0, "a far away") == "a far away photo of a S*"
    assert caption(3, "zoomed in") == "zoomed in the photo of a S*"
    # the placeholder position comes from the tokenizer: "close-up" is three tokens
    tok = smoke_pipeline.tokenizer
    for i in range(27):
        text = caption(i, "very small")
        got = tokenize_with_placeholder(tok, text, num_slots=5)
        before = tok(text[: text.index("S*")], add_special_tokens=False).input_ids
        assert got.slot == 1 + len(before)
    assert tokenize_with_placeholder(tok, caption(9), 1).slot == 1 + len(
        tok("a close-up photo of a", add_special_tokens=False).input_ids
    )


def _manifest(tmp_path, rows):
    path = tmp_path / "m.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_manifest_errors_are_one_line(tmp_path):
    img = tmp_path / "a.jpg"
    Image.new("RGB", (40, 30)).save(img)
    good = {"image": str(img), "box": [1, 2, 30, 25], "mask": None}
    assert read_manifest(_manifest(tmp_path, [good]), need_mask=False)[0].box == (1.0, 2.0, 30.0, 25.0)
    cases = [
        ([good, "{not json"], "m.jsonl:2: not valid JSON"),
        ([{**good, "box": [5, 5, 2, 9]}], 'm.jsonl:1: "box"'),
        ([{**good, "image": str(tmp_path / "missing.jpg")}], "missing.jpg not found"),
    ]
    for rows, message in cases:
        with pytest.raises(EliteError, match=message):
            read_manifest(_manifest(tmp_path, rows), need_mask=False)
    with pytest.raises(EliteError, match='stage 2 needs a "mask"'):
        read_manifest(_manifest(tmp_path, [good]), need_mask=True)
    with pytest.raises(EliteError, match="not found; run the stages"):
        read_manifest(tmp_path / "nope.jsonl", need_mask=False)


def test_draws_are_disjoint_across_processes_and_resume_exactly():
    one = list(DrawSampler(0, 6, 3, 0, 1))
    two = [list(DrawSampler(0, 3, 3, p, 2)) for p in range(2)]
    assert set(two[0]).isdisjoint(two[1]) and sorted(two[0] + two[1]) == one
    assert list(DrawSampler(4, 6, 3, 0, 1)) == one[12:]  # resumed at micro-batch 4


def test_padded_box_clips_at_the_border():
    assert padded_box([3, 4, 50.5, 60], (55, 64), 10) == (0, 0, 55, 64)
    assert padded_box([20, 20, 30, 30], (100, 100), 10) == (10, 10, 40, 40)


class _Cfg:
    clip_crop_p = clip_rotate_p = clip_translate_p = 1.0
    clip_crop_scale, clip_rotate_deg, clip_translate_px = [1.0, 1.143], 30.0, 60.0


def test_object_augmentation_moves_the_mask_with_the_image():
    x = torch.rand(3, 224, 224)
    m = torch.zeros(1, 224, 224)
    m[:, 60:160, 80:150] = 1
    for seed in range(5):
        obj, mask, applied = local_clip_augment(x * m, m, np.random.default_rng(seed), _Cfg)
        assert set(applied) == {"crop", "rotate", "translate"}
        assert set(mask.unique().tolist()) <= {0.0, 1.0} and 0 < mask.sum() < 224 * 224
        assert (obj * (1 - mask)).abs().max() == 0  # nothing outside the (moved) mask
        assert not torch.equal(mask, m)


def test_masked_ldm_loss_ignores_the_outside():
    pred, target = torch.zeros(2, 4, 8, 8), torch.ones(2, 4, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 3:6] = 1
    assert ldm_loss(pred, target) == 1
    pred[:, :, 0, 0] = 7.0  # outside the mask
    assert ldm_loss(pred, target, mask) == pytest.approx(4.0)  # summed over the 4 channels, per masked cell
    pred[0, :, 2, 3] = 1.0  # one masked cell of sample 0 right: 8 of 9 cells wrong in sample 0
    assert ldm_loss(pred, target, mask) == pytest.approx((4 * 8 / 9 + 4) / 2)


def test_local_value_regulariser_is_mean_over_layers(smoke_pipeline):
    kv = smoke_pipeline.elite.local_kv
    tokens = torch.randn(2, 256, smoke_pipeline.text_encoder.config.hidden_size)
    expected = np.mean([pair["to_v"](tokens).abs().mean().item() for pair in kv.layers.values()])
    assert len(kv.layers) == 16
    assert local_value_regulariser(kv, tokens).item() == pytest.approx(expected, rel=1e-5)


def _global_samples(scenes, pipe, draws: int, **update) -> list[dict]:
    cfg = load_params(REPO / "params.yaml", "smoke").train_global.model_copy(update=update)
    dataset = GlobalDataset(
        read_manifest(scenes["global"], need_mask=False), cfg, pipe.tokenizer, ClipSpec(pipe.image_processor)
    )
    return [dataset[d] for d in range(draws)]


def _reserves(sample: dict, tokenizer, slots: int) -> bool:
    """Is the sample's prompt one of the templates tokenized with `slots` slots at its placeholder?"""
    ids = sample["input_ids"]
    return any(
        torch.equal(ids, tokenize_with_placeholder(tokenizer, caption(t), num_slots=slots).input_ids)
        for t in range(len(TEMPLATES))
    )


def test_word_dropout_gives_w0_alone_to_its_share_of_samples(scenes, smoke_pipeline):
    """Off (the authors' recipe): five slots in every row, none marked; at 0.5 about half the rows reserve one
    slot, and the text encoder gets w0 alone there."""
    tok = smoke_pipeline.tokenizer
    off = _global_samples(scenes, smoke_pipeline, 40, word_dropout=0.0)
    assert not any(s["primary_only"] for s in off) and all(_reserves(s, tok, 5) for s in off)
    half = _global_samples(scenes, smoke_pipeline, 200, word_dropout=0.5)
    share = sum(bool(s["primary_only"]) for s in half) / len(half)
    assert 0.38 < share < 0.62, share
    assert all(_reserves(s, tok, 1 if s["primary_only"] else 5) for s in half)

    batch = collate(half[:8])
    assert batch["primary_only"].any() and not batch["primary_only"].all()
    words = torch.randn(8, 5, smoke_pipeline.text_encoder.config.hidden_size)
    with torch.no_grad():
        text = encode_stage1_text(
            smoke_pipeline.text_encoder, batch["input_ids"], batch["slot"], words, batch["primary_only"]
        )
        for i in range(8):
            k = 1 if batch["primary_only"][i] else 5
            row = slice(i, i + 1)
            alone = encode_with_words(
                smoke_pipeline.text_encoder, batch["input_ids"][row], batch["slot"][row], words[row, :k]
            )
            torch.testing.assert_close(text[row], alone, rtol=1e-5, atol=1e-5)

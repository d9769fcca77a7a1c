"""The training sample grids show held-out concepts (the DreamBench subjects' concept images, masked with the
mask stage's SAM masks where present), one row each; without a subjects file, the first training rows."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import write_params

from elite.config import load_params
from elite.errors import EliteError
from elite.models.elite_model import EliteModel
from elite.train.data import ClipSpec, read_manifest
from elite.train.samples import sample_concepts
from elite.train.stages import LocalStage, load_frozen, sample_grid


@pytest.fixture(scope="module")
def sample_setup(smoke_models, scenes, session_tmp, concept_image):
    """A folder laid out like the repository: data/dreambench/subjects.json with three subjects, a SAM mask
    for the first of them only, and train params for the smoke models."""
    folder = session_tmp / "train-samples"
    for i, name in enumerate(["red_disc", "dog", "blue_box"]):
        (folder / "data" / "dreambench" / name).mkdir(parents=True, exist_ok=True)
        image = Image.open(concept_image).rotate(90 * i, expand=True)
        image.save(folder / "data" / "dreambench" / name / "00.jpg")
    rows = [
        {"subject": n, "class": "thing", "live": False, "images": [f"data/dreambench/{n}/00.jpg"], "prompts": []}
        for n in ["red_disc", "dog", "blue_box"]
    ]
    (folder / "data" / "dreambench" / "subjects.json").write_text(json.dumps(rows))
    (folder / "data" / "masks" / "dreambench").mkdir(parents=True, exist_ok=True)
    shutil.copy(concept_image.with_name("concept_mask.png"), folder / "data" / "masks" / "dreambench" / "red_disc.png")
    params = write_params(
        folder,
        smoke_models,
        {"global": scenes["global"], "local": scenes["local"]},
        {"train_local": {"sample_count": 2}},
        local_init=smoke_models / "elite",
    )
    cfg = load_params(params, profile="smoke").train_local
    frozen = load_frozen(cfg.base, str(smoke_models / "image_encoder"), torch.device("cpu"), torch.float32)
    dataset = LocalStage(cfg).dataset(read_manifest(cfg.manifest, True), frozen, ClipSpec(frozen.image_processor))
    return folder, cfg, frozen, dataset


def test_grid_rows_are_held_out_concepts(sample_setup, smoke_models):
    folder, cfg, frozen, dataset = sample_setup
    with contextlib.chdir(folder):
        concepts = sample_concepts(cfg, dataset, with_mask=True)
    assert [c.name for c in concepts] == ["red_disc", "dog"]  # sample_count of them, in the file's order
    assert concepts[0].mask is not None and concepts[0].mask.size == concepts[0].image.size
    assert concepts[1].mask is None and concepts[1].image.size == (128, 96)  # rotated: not a training crop
    elite = LocalStage(cfg).build(EliteModel.from_pretrained(smoke_models / "elite"), frozen)
    grid = sample_grid(frozen, elite, concepts, cfg, lam=cfg.sample_lam)
    assert grid.size == (2 * 64, 2 * 64)  # one row per concept: concept | generation
    pixels = np.asarray(grid)
    first_concept = np.asarray(concepts[0].image.convert("RGB").resize((64, 64), Image.BICUBIC))
    assert np.array_equal(pixels[:64, :64], first_concept)
    assert not np.array_equal(pixels[:64, 64:], pixels[64:, 64:])  # each concept generates its own image


def test_without_a_subjects_file_the_first_training_rows_stand_in(sample_setup, tmp_path, caplog):
    _, cfg, _, dataset = sample_setup
    with contextlib.chdir(tmp_path), caplog.at_level(logging.WARNING, logger="elite.train"):
        concepts = sample_concepts(cfg, dataset, with_mask=True)
    assert "data/dreambench/subjects.json not found" in caplog.text
    assert [c.name for c in concepts] == ["row-0", "row-1"]
    crop, mask = dataset.crop(1, cfg.crop_pad[0], with_mask=True)
    assert np.array_equal(np.asarray(concepts[1].image), np.asarray(crop))


def test_a_subject_path_outside_the_repository_is_refused(sample_setup, tmp_path):
    _, cfg, _, dataset = sample_setup
    (tmp_path / "data" / "dreambench").mkdir(parents=True)
    (tmp_path / "data" / "dreambench" / "subjects.json").write_text(
        json.dumps([{"subject": "../x", "images": ["a.jpg"]}])
    )
    with contextlib.chdir(tmp_path), pytest.raises(EliteError, match="plain name"):
        sample_concepts(cfg, dataset, with_mask=True)

"""One registered model per profile, against a real MLflow tracking server: a smoke experiment with high
scores, then toy registrations with the toy profile's real (lower) numbers. The toy champion is the toy model
(never compared with the smoke one), the toy profile's fixed floor stops a drift of small regressions, a name
shared by two profiles is refused, and `models:/elite-toy@champion` pulled in a fresh process outside the
repository gives the toy model's images. Outside the repository without MLFLOW_TRACKING_URI, loading says so
in one line and leaves no empty store behind."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import config_maker, downstream_app
from PIL import Image

from elite.config import load_params
from elite.errors import EliteError

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def toy_models(smoke_models, tmp_path_factory) -> Path:
    """The smoke base and image encoder with ELITE weights of another seed: a model that generates other images
    than the smoke one, standing in for the toy profile's (the real toy models take an hour to prepare)."""
    from elite.smoke_models import init_elite_weights

    root = tmp_path_factory.mktemp("toy-models")
    for name in ("base", "image_encoder"):
        shutil.copytree(smoke_models / name, root / name)
    init_elite_weights(root / "base", root / "image_encoder", root / "elite", seed=1234)
    return root


@pytest.fixture(scope="module")
def toy_params():
    return load_params(REPO / "params.yaml", profile="toy")


@pytest.fixture(scope="module")
def toy_cfg(toy_params, toy_models, tmp_path_factory):
    return config_maker(toy_params.register, toy_models, tmp_path_factory.mktemp("toy-register"))


@pytest.fixture(scope="module")
def registrations(mlflow_server, params, register_cfg, toy_params, toy_cfg, metrics_for):
    """smoke (dino_i 0.96) first, then a drift of toy versions, each within tolerance of the last champion."""
    from elite.registry.register import register_model

    floor = toy_params.register.floor
    smoke = register_model(params, register_cfg(metrics_for(0.30, 0.96), "smoke", verify=False))
    ref_t, ref_d = floor["overall.clip_t"], floor["overall.dino_i"]
    drift = [
        (ref_t, ref_d),
        (ref_t - 0.004, ref_d - 0.009),
        (ref_t - 0.008, ref_d - 0.018),
        (ref_t - 0.012, ref_d - 0.027),
    ]
    toy = [
        register_model(toy_params, toy_cfg(metrics_for(t, d), f"toy{i}", verify=i == 0))
        for i, (t, d) in enumerate(drift)
    ]
    return smoke, toy


def test_each_profile_has_its_own_registered_model_and_champion(registrations, mlflow_server, toy_params):
    from mlflow import MlflowClient

    smoke, toy = registrations
    assert (smoke["model_name"], smoke["profile"], smoke["decision"]) == ("elite-smoke", "smoke", "promoted")
    first = toy[0]
    # the toy model is never compared with the smoke champion (dino_i 0.96): it is the first toy version
    assert (first["model_name"], first["version"], first["decision"]) == ("elite-toy", 1, "promoted")
    assert first["previous_champion"] is None and "no champion yet" in first["reason"]
    assert f"floor {toy_params.register.floor['overall.dino_i']:.4f}" in first["reason"]
    client = MlflowClient(mlflow_server)
    assert client.get_model_version_by_alias("elite-smoke", "champion").version == "1"
    assert client.get_model_version("elite-toy", "1").tags["profile"] == "toy"
    assert client.get_model_version("elite-smoke", "1").tags["profile"] == "smoke"


def test_the_floor_stops_a_drift_of_small_regressions(registrations, mlflow_server, toy_params):
    from mlflow import MlflowClient

    _, toy = registrations
    floor = toy_params.register.floor["overall.dino_i"]
    assert [r["decision"] for r in toy] == ["promoted", "promoted", "promoted", "rejected"]
    last = toy[-1]
    # within tolerance of the champion before it (v3), under the profile's fixed floor
    assert last["previous_champion"] == 3 and last["champion"] == 3
    assert f"overall.dino_i {floor - 0.027:.4f} < floor {floor:.4f} - tolerance 0.02" in last["reason"]
    assert "champion v3" not in last["reason"]
    assert MlflowClient(mlflow_server).get_model_version_by_alias("elite-toy", "champion").version == "3"


def test_a_name_shared_by_two_profiles_is_refused_before_anything_is_logged(
    registrations, mlflow_server, toy_params, toy_cfg, metrics_for
):
    from mlflow import MlflowClient

    from elite.registry.register import register_model

    client = MlflowClient(mlflow_server)
    before = len(client.search_model_versions("name='elite-smoke'"))
    cfg = toy_cfg(metrics_for(0.9, 0.9), "shared", model_name="elite-smoke", verify=False)
    with pytest.raises(EliteError) as err:
        register_model(toy_params, cfg)
    message = str(err.value)
    assert "\n" not in message
    assert "'elite-smoke': its champion (version 1) was trained on the smoke profile, this model on toy" in message
    assert "register.toy.model_name" in message
    assert len(client.search_model_versions("name='elite-smoke'")) == before
    assert not Path(cfg.report).exists()


def _png(path: Path) -> np.ndarray:
    img = Image.open(io.BytesIO(path.read_bytes()))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB")).astype(np.int16)


def _direct(models: Path, concept_image: Path, seed: int, steps: int) -> np.ndarray:
    from elite.pipeline import ElitePipeline

    pipe = ElitePipeline.from_pretrained(models / "base", models / "elite")
    pipe.set_progress_bar_config(disable=True)
    concept = pipe.encode_concept(concept_image, concept_image.with_name("concept_mask.png"))
    img = pipe(
        "a S* on the beach",
        concept=concept,
        lam=0.6,
        num_inference_steps=steps,
        guidance_scale=4.0,
        scheduler="lms",
        generator=torch.Generator().manual_seed(seed),
    ).images[0]
    return np.asarray(img).astype(np.int16)


def _downstream(tmp_path: Path, env: dict, concept_image: Path, model_uri: str = "models:/elite-toy@champion"):
    return downstream_app(tmp_path, env, model_uri, concept_image, ["a S* on the beach"])


def test_toy_champion_pulled_outside_the_repository_gives_the_toy_images(
    registrations, mlflow_server, toy_models, smoke_models, concept_image, tmp_path
):
    env = dict(os.environ, MLFLOW_TRACKING_URI=mlflow_server, PYTHONPATH="", OMP_NUM_THREADS="1")
    proc, out = _downstream(tmp_path, env, concept_image)  # models:/elite-toy@champion
    assert proc.returncode == 0, proc.stderr[-3000:]
    pulled = _png(out / "image_0.png")
    assert np.abs(pulled - _direct(toy_models, concept_image, seed=7, steps=3)).max() <= 2
    assert np.abs(pulled - _direct(smoke_models, concept_image, seed=7, steps=3)).max() > 2  # not the smoke model


def test_loading_outside_the_repository_without_a_tracking_uri_says_so(concept_image, tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc, out = _downstream(tmp_path, dict(env, PYTHONPATH=""), concept_image)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no MLflow store here" in lines[0] and "MLFLOW_TRACKING_URI" in lines[0], lines
    assert not (tmp_path / "mlflow.db").exists() and not out.exists()

    # the demo's loader, the same way
    from elite.demo.model import DemoModel

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EliteError, match=r"^models:/elite-toy@champion: no MLflow store here .*MLFLOW_TRACKING_URI"):
        DemoModel.from_registry("models:/elite-toy@champion")
    assert not (tmp_path / "mlflow.db").exists()


def test_the_toy_floor_is_the_committed_reference(toy_params):
    """The toy floor is the committed reference run's value of each gate metric (4 decimals): a new reference
    run moves the floor with it (the v1 floor rejected v2's own reference)."""
    from elite.registry.gates import lookup

    path = REPO / "metrics" / "dreambench.json"
    reference = json.loads(path.read_text())
    for metric, value in toy_params.register.floor.items():
        committed = lookup(reference, metric, str(path))  # the register gate's own reading of a dotted path
        assert value == round(committed, 4), (metric, value, committed)

"""End to end against a real MLflow tracking server: register three times (gates pass, pass against the
champion, fail), load `models:/elite-smoke@champion` in a fresh process, and score through `mlflow models serve`."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import downstream_app
from PIL import Image

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registered(mlflow_server, params, register_cfg, metrics_for):
    """Three registrations: the first (no champion), a slightly worse one within tolerance, a worse one.
    Only the first loads the logged model back (`verify`); the later ones are the same model."""
    from elite.registry.register import register_model

    first = register_model(params, register_cfg(metrics_for(0.250, 0.600), "v1"))
    within = register_model(params, register_cfg(metrics_for(0.247, 0.595), "v2", verify=False))
    worse = register_model(params, register_cfg(metrics_for(0.200, 0.640), "v3", verify=False))
    return first, within, worse


def test_gates_move_the_champion_only_when_they_pass(registered, register_cfg, mlflow_server):
    from mlflow import MlflowClient

    first, within, worse = registered
    assert (first["version"], first["decision"], first["aliases"]) == (1, "promoted", ["candidate", "champion"])
    assert first["previous_champion"] is None and "no champion yet" in first["reason"]
    assert (within["version"], within["decision"], within["champion"]) == (2, "promoted", 2)
    assert within["previous_champion"] == 1 and all(g["passed"] and g["champion"] is not None for g in within["gates"])
    assert (worse["version"], worse["decision"], worse["aliases"], worse["champion"]) == (
        3,
        "rejected",
        ["candidate"],
        2,
    )
    assert "overall.clip_t 0.2000 < champion v2 0.2470 - tolerance 0.005" in worse["reason"]
    assert "dino_i" not in worse["reason"]  # DINO-I improved: only the failing gate is the reason
    # the report file is the returned record
    assert json.loads(Path(register_cfg({}, "v3").report).read_text()) == worse

    client = MlflowClient(mlflow_server)
    assert client.get_model_version_by_alias("elite-smoke", "champion").version == "2"
    assert client.get_model_version_by_alias("elite-smoke", "candidate").version == "3"
    v3 = client.get_model_version("elite-smoke", "3")
    assert v3.tags["gate.decision"] == "rejected" and v3.tags["gate.reason"] == worse["reason"]
    run = client.get_run(worse["run_id"])
    assert run.data.tags["stage"] == "register" and run.data.tags["register.decision"] == "rejected"
    assert run.data.metrics["dreambench.overall.clip_t"] == pytest.approx(0.2)
    assert run.data.metrics["dreambench.sweep.lam_0.8.dino_i"] == pytest.approx(0.64)
    assert run.data.params["register.model_name"] == "elite-smoke" and run.data.params["profile"] == "smoke"
    artifacts = {a.path for a in client.list_artifacts(worse["run_id"])}
    assert {"metrics", "register.json"} <= artifacts


def test_logged_model_has_signature_example_and_artifacts(registered, mlflow_server):
    import mlflow

    info = mlflow.models.get_model_info("models:/elite-smoke@champion")
    inputs = {c["name"]: (c["type"], c["required"]) for c in info.signature.inputs.to_dict()}
    assert inputs["image"] == ("string", False) and inputs["prompt"] == ("string", True)  # image: version 1 only
    assert not inputs["version"][1] and not inputs["concepts"][1] and inputs["multi_concept"] == ("string", False)
    assert inputs["mask"] == ("string", False) and not inputs["steps"][1] and not inputs["seed"][1]
    assert inputs["negative_prompt"] == ("string", False) and not inputs["height"][1] and not inputs["width"][1]
    assert [c["name"] for c in info.signature.outputs.to_dict()] == ["image"]
    flavor = info.flavors["python_function"]
    assert set(flavor["artifacts"]) == {"elite_weights", "image_encoder", "base"}
    assert flavor["config"]["steps"] == 10 and flavor["config"]["scheduler"] == "lms"
    assert info.saved_input_example_info["type"] == "dataframe"


def _png(data: bytes):
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB")).astype(np.int16)


def _direct(smoke_pipeline, concept_image, prompt: str, seed: int, steps: int, lam: float):
    """The same generation through ElitePipeline in this process, as a reference."""
    mask = concept_image.with_name("concept_mask.png")
    concept = smoke_pipeline.encode_concept(concept_image, mask)
    img = smoke_pipeline(
        prompt,
        concept=concept,
        lam=lam,
        num_inference_steps=steps,
        guidance_scale=5.0,
        scheduler="lms",
        generator=torch.Generator().manual_seed(seed),
    ).images[0]
    return np.asarray(img).astype(np.int16)


@pytest.fixture(scope="module")
def scoring_server(registered, mlflow_server, servers, tmp_path_factory):
    """`mlflow models serve -m models:/elite-smoke@champion --env-manager local`, started without waiting (its
    start overlaps the downstream-app test); yields (url, ready)."""
    free_port, server, mlflow_bin = servers
    port = free_port()
    cmd = [
        str(mlflow_bin),
        "models",
        "serve",
        "-m",
        "models:/elite-smoke@champion",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # the scoring server runs `uvicorn` from PATH: the environment's bin folder (as with an activated venv)
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=mlflow_server,
        OMP_NUM_THREADS="1",
        PATH=f"{mlflow_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with server(cmd, f"http://127.0.0.1:{port}/ping", log, env=env, timeout=300, wait=False) as ready:
        yield f"http://127.0.0.1:{port}", ready


def test_downstream_app_loads_champion_in_a_fresh_process(
    registered, scoring_server, mlflow_server, concept_image, smoke_pipeline, tmp_path
):
    env = dict(os.environ, MLFLOW_TRACKING_URI=mlflow_server, PYTHONPATH="", OMP_NUM_THREADS="1")
    prompts = ["a S* on the beach", "a photo of a S*"]
    proc, out = downstream_app(tmp_path, env, "models:/elite-smoke@champion", concept_image, prompts)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = _png((out / "image_0.png").read_bytes()), _png((out / "image_1.png").read_bytes())
    assert first.shape == (64, 64, 3) and second.shape == (64, 64, 3)
    reference = _direct(smoke_pipeline, concept_image, "a S* on the beach", seed=7, steps=3, lam=0.6)
    assert np.abs(first - reference).max() <= 2  # the registered model is the trained pipeline
    assert np.abs(first - second).max() > 2  # and the prompt matters


def test_minimal_app_pulls_the_champion_from_the_server(
    registered, mlflow_server, concept_image, smoke_pipeline, tmp_path
):
    """examples/minimal_app.py (30 lines) in a fresh process, outside the repository, against the real server:
    the champion's image with the model's stored defaults (smoke: 10 LMS steps, guidance 5, seed 42, lambda 0.8)."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=mlflow_server, PYTHONPATH="", OMP_NUM_THREADS="1")
    app = Path(__file__).resolve().parents[2] / "examples" / "minimal_app.py"
    out = tmp_path / "beach.png"
    mask = concept_image.with_name("concept_mask.png")
    cmd = [sys.executable, str(app), str(concept_image), str(mask), "a S* on the beach", str(out)]
    proc = subprocess.run(
        [*cmd, "models:/elite-smoke@champion"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = _direct(smoke_pipeline, concept_image, "a S* on the beach", seed=42, steps=10, lam=0.8)
    assert np.abs(_png(out.read_bytes()) - reference).max() <= 2


def test_rest_invocations_of_mlflow_models_serve(scoring_server, concept_image, smoke_pipeline):
    url, ready = scoring_server
    b64 = lambda p: base64.b64encode(Path(p).read_bytes()).decode()  # noqa: E731
    row = {
        "image": b64(concept_image),
        "mask": b64(concept_image.with_name("concept_mask.png")),
        "prompt": "a S* on the beach",
        "steps": 3,
        "seed": 7,
        "lam": 0.6,
    }

    def post(payload: dict):
        req = urllib.request.Request(
            f"{url}/invocations", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    ready()
    status, body = post({"dataframe_records": [row, {k: v for k, v in row.items() if k != "mask"}]})
    assert status == 200, body
    images = [_png(base64.b64decode(p["image"])) for p in body["predictions"]]
    assert len(images) == 2 and images[0].shape == (64, 64, 3)
    reference = _direct(smoke_pipeline, concept_image, "a S* on the beach", seed=7, steps=3, lam=0.6)
    assert np.abs(images[0] - reference).max() <= 2
    assert np.abs(images[0] - images[1]).max() > 0  # without the mask the local branch sees the whole image
    status, body = post({"dataframe_records": [dict(row, prompt="a dog on the beach")]})
    assert status == 400 and "row 0" in body["message"] and "S*" in body["message"]
    # request version 2 over REST: two concepts (the first from two images), beside a version-1 row
    two = {
        "version": 2,
        "prompt": "a S1* next to a S2*",
        "steps": 3,
        "seed": 7,
        "lam": 0.6,
        "concepts": [
            {"images": [row["image"], row["image"]], "masks": [row["mask"], None]},
            {"images": [row["image"]]},
        ],
    }
    status, body = post({"dataframe_records": [row, two]})
    assert status == 200, body
    first, second = (_png(base64.b64decode(p["image"])) for p in body["predictions"])
    assert np.abs(first - reference).max() <= 2 and np.abs(first - second).max() > 0

"""Both stages through the real loop, in this process: learning, outputs, MLflow, frozen parts, NaN stop,
and the latent cache giving the same targets as the VAE."""

from __future__ import annotations

import contextlib
import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_helpers import write_params

from elite.config import load_params
from elite.errors import EliteError
from elite.models.elite_model import EliteModel
from elite.pipeline import ElitePipeline


def _train(params_path: Path, section: str, folder: Path) -> dict:
    from elite.train.loop import train
    from elite.train.stages import GlobalStage, LocalStage

    cfg = getattr(load_params(params_path, profile="smoke"), section)
    with contextlib.chdir(folder):  # the MLflow artifact folder of a fresh store lands here, not in the repo
        return train(GlobalStage(cfg) if section == "train_global" else LocalStage(cfg), "smoke")


def _plot(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def overfit(smoke_models, scenes, session_tmp):
    """Stage 1 on two images with each image's crop, augmentation, noise and timestep fixed."""
    folder = session_tmp / "train-overfit"
    params = write_params(
        folder,
        smoke_models,
        {"global": scenes["global2"], "local": scenes["local2"]},
        {
            "train_global": {
                "max_steps": 60,
                "repeat_randomness": True,
                "learning_rate": 3.0e-3,
                "checkpoint_every": 30,
                "sample_every": 30,
                "cache_latents": True,
            },
            "train_local": {"max_steps": 12, "checkpoint_every": 6, "sample_every": 12},
        },
    )
    metrics = _train(params, "train_global", folder)
    return folder, params, metrics


@pytest.fixture(scope="module")
def local_run(overfit):
    """Stage 2 from the stage-1 weights, as a step of a pipeline run (ELITE_PARENT_RUN_ID)."""
    import mlflow

    from elite.tracking import PARENT_ENV, setup_mlflow

    folder, params, _ = overfit
    setup_mlflow()
    with mlflow.start_run(run_name="pipeline") as parent:
        pass
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PARENT_ENV, parent.info.run_id)
        metrics = _train(params, "train_local", folder)
    return metrics, parent.info.run_id


def test_stage1_overfits_two_images(overfit):
    folder, _, metrics = overfit
    rows = _plot(folder / "train_global" / "plot.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 61))
    first, last = np.mean([r["loss"] for r in rows[:5]]), np.mean([r["loss"] for r in rows[-5:]])
    assert last <= 0.7 * first, f"loss {first:.3f} -> {last:.3f}: not down by 30%"
    assert all(r["lr"] == 3e-3 and np.isfinite(r["grad_norm"]) and r["images_per_second"] > 0 for r in rows)
    assert metrics["steps"] == 60 and metrics["resumed_from_step"] == 0 and metrics["num_processes"] == 1
    assert metrics["final_loss"] < metrics["first_loss"]


def test_stage1_output_is_a_usable_global_only_model(overfit, smoke_models, concept_image):
    folder, _, _ = overfit
    out = folder / "train_global" / "weights"
    model = EliteModel.from_pretrained(out)
    assert model.local_mapper is None and not model.config.has_local
    init = EliteModel.from_pretrained(smoke_models / "elite")
    assert not torch.equal(model.global_mapper.cls_mlps[0][0].weight, init.global_mapper.cls_mlps[0][0].weight)
    pipe = ElitePipeline.from_pretrained(smoke_models / "base", out)  # what `elite generate --weights` loads
    pipe.set_progress_bar_config(disable=True)
    concept = pipe.encode_concept(concept_image)
    assert concept.local_tokens is None
    image = pipe(
        "a S* on the beach", concept=concept, num_inference_steps=2, generator=torch.Generator().manual_seed(0)
    ).images[0]
    assert image.size == (64, 64)
    # the final checkpoint holds the same weights plus optimiser, scheduler and RNG state
    ckpt = folder / "train_global" / "checkpoints" / "step-0000060"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "elite",
        "history.csv",
        "optimizer.safetensors",
        "rng.safetensors",
        "scheduler.safetensors",
        "state.json",
    ]
    a, b = load_file(ckpt / "elite" / "elite.safetensors"), load_file(out / "elite.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(list((folder / "latent-cache").rglob("*.safetensors"))) == 2  # one cached distribution per row


def test_stage1_mlflow_run(overfit):
    import mlflow

    folder, _, _ = overfit
    client = mlflow.tracking.MlflowClient()
    runs = [
        r
        for r in client.search_runs([mlflow.get_experiment_by_name("elite").experiment_id])
        if r.data.params.get("train_global.checkpoint_dir") == str(folder / "train_global" / "checkpoints")
    ]
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "train_global"
    assert run.data.params["train_global.learning_rate"] == "0.003" and run.data.params["profile"] == "smoke"
    for key in ("loss", "loss_ldm", "loss_reg", "lr", "grad_norm", "images_per_second"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 60, key
    samples = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert samples == ["samples/step_0000030.png", "samples/step_0000060.png"]
    weights = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "weights")}
    assert weights == {"elite.safetensors", "elite_config.json"}


def test_stage2_trains_only_the_local_branch(overfit, local_run, smoke_models, concept_image):
    import mlflow

    folder, params, _ = overfit
    metrics, parent = local_run
    assert metrics["steps"] == 12
    children = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent}'", search_all_experiments=True)
    assert list(children["tags.stage"]) == ["train_local"]  # nested under the pipeline run
    stage1 = load_file(folder / "train_global" / "weights" / "elite.safetensors")
    final = load_file(folder / "train_local" / "weights" / "elite.safetensors")
    assert all(torch.equal(stage1[k], final[k]) for k in stage1)  # global mapper and global K/V frozen
    from elite.train.stages import LocalStage, load_frozen

    fresh = LocalStage(load_params(params, profile="smoke").train_local).build(
        EliteModel.from_pretrained(folder / "train_global" / "weights"),
        load_frozen(
            str(smoke_models / "base"), str(smoke_models / "image_encoder"), torch.device("cpu"), torch.float32
        ),
    )
    changed = [
        k
        for k, v in fresh.state_dict().items()
        if k.startswith(("local_mapper", "local_kv")) and not torch.equal(v, final[k])
    ]
    assert any(k.startswith("local_mapper") for k in changed) and any(k.startswith("local_kv") for k in changed)
    pipe = ElitePipeline.from_pretrained(smoke_models / "base", folder / "train_local" / "weights")
    pipe.set_progress_bar_config(disable=True)
    concept = pipe.encode_concept(concept_image, concept_image.with_name("concept_mask.png"))
    assert concept.local_tokens is not None
    pipe("a S* on the beach", concept=concept, lam=0.8, num_inference_steps=2)
    rows = _plot(folder / "train_local" / "plot.csv")
    assert len(rows) == 12 and all(r["loss_reg"] > 0 for r in rows)


def test_nan_loss_stops_naming_step_and_checkpoint(smoke_models, scenes, session_tmp):
    folder = session_tmp / "train-nan"
    params = write_params(
        folder,
        smoke_models,
        scenes,
        {"train_global": {"max_steps": 8, "learning_rate": 1.0e30, "checkpoint_every": 1, "sample_every": 0}},
    )
    with pytest.raises(EliteError) as err:
        _train(params, "train_global", folder)
    message = str(err.value)
    assert "\n" not in message and re.search(r"train_global: loss is (nan|inf|-inf) at step", message)
    step = int(message.split("at step ")[1].split(";")[0])
    assert (
        step >= 2
        and f"last good checkpoint: {folder / 'train_global' / 'checkpoints' / f'step-{step - 1:07d}'}" in message
    )
    assert not (folder / "train_global" / "weights").exists()


def test_latent_cache_gives_the_vae_targets(smoke_models, scenes, session_tmp):
    """The same draws through the stage-1 loss with cached latent distributions and with the VAE."""
    from accelerate import Accelerator

    from elite.train.data import ClipSpec, collate, read_manifest
    from elite.train.latents import LatentCache
    from elite.train.stages import GlobalStage, load_frozen

    params = write_params(session_tmp / "train-cache", smoke_models, scenes)
    cfg = load_params(params, profile="smoke").train_global
    init = EliteModel.from_pretrained(cfg.init)
    frozen = load_frozen(cfg.base, str(smoke_models / "image_encoder"), torch.device("cpu"), torch.float32)
    stage = GlobalStage(cfg)
    elite = stage.build(init, frozen)
    elite.attach(frozen.unet, use_local=False)
    rows = read_manifest(cfg.manifest, need_mask=False)
    plain = stage.dataset(rows, frozen, ClipSpec(frozen.image_processor))
    cache = LatentCache(cfg.cache_dir, rows, Path(cfg.base) / "vae", cfg.resolution, cfg.crop_pad[0])
    assert (
        cache.build(plain, frozen.vae, Accelerator(), 3) == 4 and cache.build(plain, frozen.vae, Accelerator(), 3) == 0
    )
    cached = stage.dataset(rows, frozen, ClipSpec(frozen.image_processor), cache)
    module = stage.module_class(elite, frozen, cfg)
    draws = [5, 2, 11]
    a, b = collate([plain[d] for d in draws]), collate([cached[d] for d in draws])
    assert "latent_moments" in b and "pixel_values" not in b
    with torch.no_grad():
        la, lb = module.noisy_latents(a), module.noisy_latents(b)
        torch.testing.assert_close(la[0], lb[0], atol=1e-5, rtol=1e-5)
        assert torch.equal(la[2], lb[2])
        torch.testing.assert_close(module(a)["loss"], module(b)["loss"], atol=1e-5, rtol=1e-5)


def test_only_checkpoints_of_the_same_params_are_resumed(smoke_models, scenes, session_tmp):
    import json

    folder = session_tmp / "train-stale"
    ckpts = folder / "train_global" / "checkpoints"
    base = {"max_steps": 4, "checkpoint_every": 2, "sample_every": 0}

    def run(**over):
        params = write_params(folder, smoke_models, scenes, {"train_global": {**base, **over}})
        return _train(params, "train_global", folder)

    assert run()["resumed_from_step"] == 0
    first = json.loads((ckpts / "step-0000004" / "state.json").read_text())["fingerprint"]
    assert run(learning_rate=2.0e-3)["resumed_from_step"] == 0  # another LR: a new run
    states = [json.loads((c / "state.json").read_text()) for c in sorted(ckpts.iterdir())]
    assert [s["step"] for s in states] == [2, 4] and all(s["fingerprint"] != first for s in states)  # old ones gone
    # bookkeeping keys (how long, how often to write or sample) do not start over
    assert run(learning_rate=2.0e-3, max_steps=6, sample_every=3)["resumed_from_step"] == 4
    assert run(learning_rate=2.0e-3, max_steps=6)["resumed_from_step"] == 6  # done: only the outputs are written


def test_gradient_accumulation_matches_a_larger_batch(smoke_models, scenes, session_tmp):
    """batch 1 x 2 accumulation steps reads the same draws as batch 2 x 1 and must take the same steps."""
    weights = []
    for name, batch, accum in (("train-accum", 1, 2), ("train-batch", 2, 1)):
        folder = session_tmp / name
        params = write_params(
            folder,
            smoke_models,
            scenes,
            {
                "train_global": {
                    "max_steps": 3,
                    "batch_size": batch,
                    "gradient_accumulation_steps": accum,
                    "sample_every": 0,
                }
            },
        )
        metrics = _train(params, "train_global", folder)
        assert metrics["effective_batch_size"] == 2
        weights.append(
            (
                _plot(folder / "train_global" / "plot.csv"),
                load_file(folder / "train_global" / "weights" / "elite.safetensors"),
            )
        )
    (rows_a, a), (rows_b, b) = weights
    for ra, rb in zip(rows_a, rows_b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5) and ra["grad_norm"] == pytest.approx(
            rb["grad_norm"], rel=1e-4
        )
    init = load_file(smoke_models / "elite" / "elite.safetensors")
    update = max((a[k] - init[k]).abs().max().item() for k in a)
    gap = max((a[k] - b[k]).abs().max().item() for k in a)
    assert update > 1e-3 and gap < 0.01 * update  # float rounding only (Adam's first steps amplify it a little)

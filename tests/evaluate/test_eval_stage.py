"""The dreambench + evaluate stages end to end on the smoke models: shards, resume, metrics, sweep, report,
grids, MLflow run and FiftyOne dataset (in a subprocess whose FiftyOne mongod must be gone afterwards)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from eval_helpers import mongod_pids, write_params
from PIL import Image, ImageDraw

from elite.cli import main
from elite.data.paths import concept_mask_name

DATASET = f"elite-dreambench-test-{os.getpid()}"
FIFTYONE_CHECK = """
import json, sys
from elite.cli import main
rc = main(["--params", "params.yaml", "evaluate"])
import fiftyone as fo
ds = fo.load_dataset(sys.argv[1])
worst = ds.sort_by("dino_i").first()
print("FO " + json.dumps({"rc": rc, "n": len(ds), "variants": sorted(set(ds.values("variant"))),
                          "worst": worst.dino_i, "min": min(ds.values("dino_i")),
                          "fields": sorted(ds.get_field_schema())}))
fo.delete_dataset(sys.argv[1])
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory, smoke_models, repo_root):
    root = tmp_path_factory.mktemp("eval-project")
    write_params(
        repo_root,
        root / "params.yaml",
        evaluate={
            "weights": str(smoke_models / "elite"),
            "base": str(smoke_models / "base"),
            "clip_model": str(smoke_models / "clip_eval"),
            "dino_model": str(smoke_models / "dino_eval"),
            "images_per_prompt": 1,
            "steps": 2,
            "sweep_lams": [0.0, 1.2],
            "sweep_prompts": 2,
            "cpu_threads": 1,
            "fiftyone_dataset": DATASET,
        },
        baselines={
            "subjects": ["red_ball"],
            "ti": {"lr": 5.0e-3, "steps": 2, "batch_size": 1, "weight_decay": 0.0},
            "xti": {"lr": 1.0e-3, "steps": 2, "batch_size": 1, "weight_decay": 0.0},
        },
    )
    return root


def write_masks(root, subjects, images=2):
    """The mask stage's files: each subject's first `images` images (smoke: multi_images [2])."""
    folder = root / "data" / "masks" / "dreambench"
    folder.mkdir(parents=True, exist_ok=True)
    for s in subjects:
        for k, image in enumerate(s["images"][:images]):
            size = Image.open(root / image).size
            mask = Image.new("L", size, 0)
            ImageDraw.Draw(mask).ellipse([size[0] // 5, size[1] // 5, size[0] * 4 // 5, size[1] * 4 // 5], fill=255)
            mask.save(folder / concept_mask_name(s["subject"], image, first=k == 0))


def pngs(root):
    return sorted((root / "data" / "eval").rglob("*.png"))


def test_evaluate_stage_end_to_end(project, monkeypatch, capsys, smoke_pipeline):
    monkeypatch.chdir(project)
    threads = torch.get_num_threads()
    t0 = time.monotonic()
    assert main(["--params", "params.yaml", "dreambench"]) == 0
    print(f"dreambench {time.monotonic() - t0:.1f} s", file=sys.stderr)
    subjects = json.loads((project / "data" / "dreambench" / "subjects.json").read_text())
    capsys.readouterr()

    # no masks yet: a clear one-line error before any model is loaded
    assert main(["--params", "params.yaml", "evaluate"]) == 2
    err = capsys.readouterr().err
    assert "data/masks/dreambench/red_ball.png: SAM mask of subject 'red_ball' not found; run `elite mask`" in err
    write_masks(project, subjects, images=1)  # the several-image row (multi_images [2]) needs image 01's mask too
    assert main(["--params", "params.yaml", "evaluate"]) == 2
    err = capsys.readouterr().err
    assert (
        "data/masks/dreambench/red_ball.01.png: SAM mask of image 1 of subject 'red_ball' not found; "
        "set mask.concept_extra_images to at least 1 and run `elite mask`"
    ) in err
    write_masks(project, subjects)

    # two shards generate disjoint shares and no metrics; together they cover every image
    t0 = time.monotonic()
    assert main(["--params", "params.yaml", "evaluate", "--shard", "0/2"]) == 0
    print(f"shard 0/2 {time.monotonic() - t0:.1f} s", file=sys.stderr)
    first = pngs(project)
    assert first and not (project / "metrics" / "dreambench.json").exists()
    assert main(["--params", "params.yaml", "evaluate", "--shard", "1/2"]) == 0
    every = pngs(project)
    assert set(first) < set(every)
    n_elite = 3 * 4  # 3 subjects x (3 DreamBench prompts + "a photo of a {0} {1}") x 1 image
    # elite + images2 (the concept from 2 images) + baseline + sweep (2 lambdas x 2 prompts x 1 subject)
    # + TI and XTI on red_ball (4 prompts x 1 image) + the sweep by block (SD's layout: the global word, every
    # block, down and its blocks 0-2, mid, up and its blocks 1-3 = 11 rows x 2 prompts x 1 subject)
    assert len(every) == 3 * n_elite + 2 * 2 + 2 * 4 + 11 * 2
    stamps = {p: p.stat().st_mtime_ns for p in every}
    torch.set_num_threads(threads)
    capsys.readouterr()

    # the full run (FiftyOne + MLflow) in a subprocess: nothing left to generate, everything scored
    dbpath = project / "fiftyone-db"
    start = time.monotonic()  # (a FIFTYONE_DATABASE_URI set by another test's mongod is used as is)
    proc = subprocess.run(
        [sys.executable, "-c", FIFTYONE_CHECK, DATASET],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "FIFTYONE_DATABASE_DIR": str(dbpath)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"evaluate: 0 images generated, {len(every)} reused" in proc.stdout
    fo_info = json.loads(proc.stdout.split("FO ", 1)[1].splitlines()[0])
    deadline = time.monotonic() + 60
    while mongod_pids(dbpath) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not mongod_pids(dbpath), "the mongod FiftyOne started for the stage is still running"
    assert {p: p.stat().st_mtime_ns for p in pngs(project) if p in stamps} == stamps  # resumed, not regenerated
    print(f"full evaluate subprocess: {time.monotonic() - start:.1f} s", file=sys.stderr)

    # FiftyOne: one sample per generated image, sortable by DINO-I
    assert fo_info["rc"] == 0 and fo_info["n"] == len(every)
    assert (
        fo_info["variants"] == ["baseline", "blocks", "elite", "images2", "sweep", "ti", "xti"]
        and fo_info["worst"] == fo_info["min"]
    )
    assert {"clip_i", "clip_t", "dino_i", "prompt", "family", "lam", "seed", "subject", "class_word"} <= set(
        fo_info["fields"]
    )

    # metrics/dreambench.json
    m = json.loads((project / "metrics" / "dreambench.json").read_text())
    assert m["overall"]["images"] == n_elite and set(m["subjects"]) == {"red_ball", "blue_box", "dog"}
    assert set(m["families"]) == {"photo", "recontextualization", "property", "accessorization"}
    assert sum(f["images"] for f in m["families"].values()) == n_elite
    for row in [m["overall"], m["context"]["baseline"], *m["subjects"].values(), *m["sweep"].values()]:
        assert all(-1.0 <= row[k] <= 1.0 for k in ("clip_i", "clip_t", "dino_i"))
    assert m["context"]["real"]["pairs"] == 3 * 3 * 2 and -1 <= m["context"]["real"]["dino_i"] <= 1
    assert set(m["sweep"]) == {"lam_0", "lam_1.2"} and all(v["images"] == 2 for v in m["sweep"].values())
    blocks = sorted(m["blocks"], key=lambda name: m["blocks"][name]["order"])
    assert blocks[:3] == ["global word only", "every block", "down"] and "up.block_3" in blocks and len(blocks) == 11
    assert all(v["images"] == 2 and v["clip_i_lo"] <= v["clip_i"] <= v["clip_i_hi"] for v in m["blocks"].values())
    assert m["blocks"]["global word only"]["clip_i"] == pytest.approx(m["sweep"]["lam_0"]["clip_i"])  # same images
    assert m["blocks"]["up.block_1"]["clip_i"] != m["blocks"]["up.block_2"]["clip_i"]  # each row its own lambda
    assert set(m["timing"]["encode_s"]) == {"red_ball", "blue_box", "dog"} and m["timing"]["encode_s_mean"] > 0
    assert m["timing"]["generate_s_per_image_mean"] > 0 and m["timing"]["baseline_generate_s_per_image_mean"] > 0
    assert m["images"]["1"] == m["overall"] and m["images"]["2"]["images"] == n_elite and "pairs" not in m

    # paper Table 2 for this model: ELITE next to TI and XTI on the baselines' subject, with time per concept
    t2 = m["table2"]
    assert set(t2) == {"elite", "ti", "xti"} and all(v["images"] == 4 and v["time_s"] > 0 for v in t2.values())
    assert t2["xti"]["time_s"] > t2["elite"]["time_s"]
    assert json.loads((project / "data/eval/xti/red_ball/inversion/inversion.json").read_text())["steps"] == 2

    # per-image scores agree with the aggregates
    scores = [json.loads(line) for line in (project / "data" / "eval" / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == len(every)
    dog = [s for s in scores if s["variant"] == "elite" and s["subject"] == "dog"]
    assert m["subjects"]["dog"]["clip_t"] == pytest.approx(np.mean([s["clip_t"] for s in dog]))
    hat = next(s for s in dog if s["prompt"] == "a S* wearing a red hat")
    assert (hat["family"], hat["lam"], hat["text"]) == ("accessorization", 0.6, "a dog wearing a red hat")

    # the lambda sweep as a DVC plot CSV, grids, report
    with open(project / "plots" / "lambda_sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["lam"] for r in rows] == ["0.0", "1.2"] and all(r["clip_i"] and r["clip_t"] for r in rows)
    for s in subjects:
        grid = Image.open(project / "data" / "eval" / "grids" / f"{s['subject']}.png")
        assert grid.size == (4 * 64, 4 * (64 + 12))  # concept column + 1 image (at least 4 wide); 4 rows + labels
    report = (project / "data" / "eval" / "report.md").read_text()
    assert "| ELITE |" in report and "real vs real" in report and "](grids/dog.png)" in report
    assert "| Extended Textual Inversion (P+) |" in report
    assert "## A concept from several images" in report and "## Two concepts" not in report
    assert "![lambda sweep](lambda_sweep.png)" in report and (project / "data" / "eval" / "lambda_sweep.png").is_file()
    assert "![rows with intervals](rows.png)" in report and (project / "data" / "eval" / "rows.png").is_file()
    assert "## Lambda by block" in report and "| up.block_1 |" in report
    assert Image.open(project / "data" / "eval" / "lambda_blocks.png").size[1] > 300

    # the MLflow run of the stage
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(
        experiment_names=["elite"], filter_string="tags.stage = 'evaluate'", output_format="list"
    )
    run = max(runs, key=lambda r: r.info.start_time)
    assert run.data.metrics["overall.dino_i"] == pytest.approx(m["overall"]["dino_i"])
    assert run.data.tags["fiftyone_dataset"] == DATASET
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"grids", "lambda_sweep.png", "lambda_blocks.png", "rows.png", "report.md", "dreambench.json"} <= artifacts

    # an image is reproducible from its seed alone
    job_dir = project / "data" / "eval" / "elite" / "dog" / "a_photo_of_a_dog"
    meta = json.loads((job_dir / "0.json").read_text())
    concept = smoke_pipeline.encode_concept(
        project / subjects[2]["images"][0], project / "data/masks/dreambench/dog.png"
    )
    again = smoke_pipeline(
        "a photo of a S*",
        concept=concept,
        lam=0.8,
        num_inference_steps=2,
        guidance_scale=5.0,
        scheduler="lms",
        generator=[torch.Generator().manual_seed(meta["seed"])],
    ).images[0]
    saved = np.asarray(Image.open(job_dir / "0.png"), dtype=np.int16)
    assert np.abs(saved - np.asarray(again, dtype=np.int16)).max() <= 2


def test_changed_settings_regenerate_only_what_changed(project, monkeypatch, capsys):
    """After the end-to-end run: a new sweep lambda generates just its images (shard runs skip the rest)."""
    if not (project / "data" / "eval" / "sweep").is_dir():
        pytest.skip("needs the end-to-end run")
    monkeypatch.chdir(project)
    threads = torch.get_num_threads()
    params = yaml_load(project / "params.yaml")
    params["evaluate"]["smoke"]["sweep_lams"] = [0.0, 0.5, 1.2]
    (project / "params.yaml").write_text(yaml_dump(params))
    assert main(["--params", "params.yaml", "evaluate", "--shard", "0/1"]) == 0
    torch.set_num_threads(threads)
    assert "generated 2 images, 70 already there" in capsys.readouterr().out  # TI/XTI images and inversions reused too
    assert len(list((project / "data" / "eval" / "sweep" / "lam_0.5").rglob("*.png"))) == 2


def test_two_concept_rows_outside_the_toy_world_are_a_clear_error(project, monkeypatch, capsys):
    """`evaluate.pairs` needs the toy world's probes (the per-object scores); the smoke profile has none."""
    if not (project / "data" / "masks" / "dreambench").is_dir():
        pytest.skip("needs the end-to-end run")
    monkeypatch.chdir(project)
    params = yaml_load(project / "params.yaml")
    params["evaluate"]["smoke"]["pairs"] = 1
    (project / "params.yaml").write_text(yaml_dump(params))
    try:
        assert main(["--params", "params.yaml", "evaluate"]) == 2
        err = capsys.readouterr().err
        assert "params evaluate.pairs: the two-concept rows need a world scorer" in err
        assert "Traceback" not in err
    finally:
        params["evaluate"]["smoke"].pop("pairs")
        (project / "params.yaml").write_text(yaml_dump(params))


def yaml_load(path):
    import yaml

    return yaml.safe_load(path.read_text())


def yaml_dump(data):
    import yaml

    return yaml.safe_dump(data, sort_keys=False)

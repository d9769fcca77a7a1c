"""`elite download`, `elite curate`, `elite mask` as the smoke profile runs them (subprocesses), and
the command-line errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from data_helpers import read_jsonl

from elite.cli import main
from elite.data.sam import prepare_sam
from elite.errors import EliteError
from flows.stages import apply_profile


def run_elite(repo: Path, *args: str) -> subprocess.CompletedProcess:
    elite = Path(sys.executable).with_name("elite")
    return subprocess.run(
        [str(elite), *args], cwd=repo, env=dict(os.environ), capture_output=True, text=True, timeout=300
    )


def test_smoke_stages_from_the_command_line(repo_root, tmp_path, mongod):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(repo_root / "params.yaml", repo / "params.yaml")
    apply_profile(repo, "smoke", lambda _msg: None)  # the default profile is toy
    prepare_sam("builtin", "tiny", repo / "models/pretrained/sam", seed=5)
    seconds = {}
    for stage in ("download", "curate", "mask"):
        start = time.perf_counter()
        proc = run_elite(repo, stage)
        seconds[stage] = round(time.perf_counter() - start, 1)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.strip().splitlines()[-1].startswith(f"{stage}:")
    print("smoke stage seconds:", seconds)

    # the generated release in the official layout, and what was imported from it
    release = repo / "data/openimages/release"
    assert (release / "test-annotations-bbox.csv").is_file() and list(release.glob("test-masks-*.zip"))
    download = json.loads((repo / "metrics/download.json").read_text())
    assert download["images"] == 36 and download["rejected_total"] == 0 and download["source"] == "synthetic"
    curate = json.loads((repo / "metrics/curate.json").read_text())
    assert curate["images_dropped"]["duplicate"] == 1 and curate["global"] > 0 and curate["local"] > 0
    mask = json.loads((repo / "metrics/mask.json").read_text())
    rows = read_jsonl(repo / "data/masks/local.jsonl")
    assert mask["rows"] == len(rows) > 0 and mask["release"] > 0 and mask["sam"] > 0
    assert all((repo / r["mask"]).is_file() for r in rows)
    assert len(read_jsonl(repo / "data/curated/global.jsonl")) == curate["global"]

    import fiftyone as fo

    ds = fo.load_dataset("elite-openimages-smoke")
    assert len(ds) == 36 and "curated-global" in ds.list_saved_views()

    import mlflow

    runs = mlflow.search_runs(experiment_names=["elite"], filter_string="tags.stage = 'curate'")
    assert len(runs) >= 1 and runs.iloc[0]["metrics.global"] == curate["global"]
    assert runs.iloc[0]["params.curate.min_side"] == "40"


def test_command_line_errors_are_one_line(repo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = str(repo_root / "params.yaml")
    assert main(["--params", params, "mask", "--shard", "5/2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --shard 5/2") and err.count("\n") == 1
    assert main(["--params", params, "curate"]) == 2
    err = capsys.readouterr().err
    assert "data/openimages/release.json not found: run `elite download` first" in err and err.count("\n") == 1
    assert main(["--params", params, "mask"]) == 2
    assert "data/curated/local.jsonl not found" in capsys.readouterr().err


def _online(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


@pytest.mark.skipif(_online("storage.googleapis.com"), reason="online: this checks the offline error of the zoo path")
def test_zoo_download_offline_fails_with_a_clear_error(tmp_path, mongod):
    from elite.data.fiftyone_db import zoo_download

    start = time.perf_counter()
    with pytest.raises(
        EliteError, match=r"could not fetch open-images-v7/test after 2 tries .*set download.source"
    ) as err:
        zoo_download("test", str(tmp_path / "zoo"), max_samples=1, workers=1, retries=2, wait=0.0)
    assert "\n" not in str(err.value) and time.perf_counter() - start < 120

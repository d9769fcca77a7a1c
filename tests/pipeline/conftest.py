"""Fixtures of the pipeline tests: a throwaway git copy of this checkout, and (once per session) a real
Prefect server on loopback serving the deployments of that copy, with `elite/smoke` run through it:
the whole smoke pipeline, the evaluation's shards on a local 2-worker Dask cluster (sharding mask
works the same way: tests/pipeline/test_pipeline_stages.py tests the protocol on a toy stage)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import (
    BIN,
    REPO,
    SHARDED,
    SHARDS,
    SmokeRun,
    api,
    copy_checkout,
    flow_run_id,
    free_port,
    git,
    run,
    stage_env,
    stop_process,
    wait_for,
)

# The smoke profile made smaller (fewer scenes, training steps and evaluation prompts) to keep the
# end-to-end run within the tests' time budget: what is tested here is the orchestration; the stages'
# own tests (tests/data, tests/train, tests/evaluate, tests/register) test what they compute.
SMOKE_OVERRIDES = {
    "download": {"synthetic_images": 16},
    "train_global": {"max_steps": 4, "checkpoint_every": 2, "sample_every": 4},
    "train_local": {"max_steps": 4, "checkpoint_every": 2, "sample_every": 4},
    "evaluate": {
        "max_prompts": 2,
        "images_per_prompt": 1,
        "baseline": False,
        "sweep_lams": [0.0, 0.8],
        "sweep_prompts": 1,
        "sweep_blocks": None,  # tested in tests/evaluate/test_eval_stage.py
    },
    "baselines": {"subjects": []},
}


@pytest.fixture(scope="session")
def pipeline_copy(session_tmp) -> Path:
    repo = session_tmp / "pipeline-repo"
    copy_checkout(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"  # the default profile (make run) is toy; these tests run the fast one
    for section, values in SMOKE_OVERRIDES.items():
        params[section].setdefault("smoke", {}).update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "commit", "-q", "-am", "smaller smoke training for the tests")
    return repo


@pytest.fixture(scope="session")
def served(pipeline_copy, session_tmp):
    """`python -m flows.serve` in the copy: a Prefect server on a free loopback port (own PREFECT_HOME,
    SQLite) serving elite/full and elite/smoke. Stopped (server included) at the end of the session."""
    port = free_port()
    traces = session_tmp / "import-traces"
    traces.mkdir()
    env = stage_env(pipeline_copy, PREFECT_HOME=str(session_tmp / "prefect-pipeline"), ELITE_IMPORT_TRACE=str(traces))
    log = session_tmp / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.serve", "--port", str(port)],
            cwd=pipeline_copy,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(
            lambda: api(base, "/deployments/name/elite/smoke") and api(base, "/deployments/name/elite/full"),
            240,
            "serving elite/full and elite/smoke",
            proc,
            log,
        )
        yield dict(env, PREFECT_API_URL=base), base, traces, log, proc
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def smoke_run(served, pipeline_copy) -> SmokeRun:
    """`prefect deployment run elite/smoke --watch`, the evaluate shards on a local 2-worker Dask cluster."""
    env, base, traces, log, _ = served
    start = time.monotonic()
    proc = run(
        [
            str(BIN / "prefect"),
            "deployment",
            "run",
            "elite/smoke",
            "--watch",
            "--watch-interval",
            "2",
            "-p",
            f"shards={SHARDS}",
            "-p",
            f"shard_stages={json.dumps(list(SHARDED))}",
            "-p",
            "dask_workers=2",
        ],
        pipeline_copy,
        env,
        timeout=1500,
    )
    seconds = time.monotonic() - start
    output = proc.stdout + proc.stderr
    print(f"elite/smoke through Prefect: {seconds:.0f} s")
    return SmokeRun(pipeline_copy, env, base, flow_run_id(output), proc.returncode, output, traces, log, seconds)


@pytest.fixture(scope="session")
def dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())

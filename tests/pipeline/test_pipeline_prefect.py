"""The smoke pipeline through Prefect: a real server on loopback serving elite/full and elite/smoke from
a copy of the checkout, `prefect deployment run elite/smoke --watch` to Completed, then what the run left
behind: one task per stage, shards on Dask workers, streamed logs, the metrics artifact, the MLflow
parent run, and the code each stage imported against its dvc.yaml deps."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import BIN, SHARDED, SHARDS, api, dvc, flow_run_id, run, stop_process, wait_for

from flows.experiment import experiment_name

pytestmark = pytest.mark.slow

# imported by the CLI for every command, or not changing what a stage writes: never listed as deps
GLUE_FILES = {"elite/__init__.py", "elite/cli.py", "elite/errors.py", "elite/io.py", "elite/tracking.py"}
GLUE_DIRS = ("elite/commands/", "elite/config/")


def is_glue(root: Path, rel: str) -> bool:
    if rel in GLUE_FILES or rel.startswith(GLUE_DIRS):
        return True
    if rel.endswith("/__init__.py"):  # a package docstring changes nothing
        body = ast.parse((root / rel).read_text()).body
        return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)
    return False


def task_runs(base: str, flow_run_id: str) -> list[dict]:
    """Task runs of the flow run and of its nested flow runs (the shards)."""
    runs = api(base, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200})
    ids = {r["id"] for r in runs}
    for child in api(base, "/flow_runs/filter", {"limit": 200}):
        if child.get("parent_task_run_id") in ids:
            runs += api(base, "/task_runs/filter", {"flow_runs": {"id": {"any_": [child["id"]]}}, "limit": 200})
    return runs


def task_logs(base: str, task_run_id: str) -> list[str]:
    logs = api(
        base, "/logs/filter", {"logs": {"task_run_id": {"any_": [task_run_id]}}, "limit": 200, "sort": "TIMESTAMP_ASC"}
    )
    return [entry["message"] for entry in logs]


def by_name(runs: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in runs}


def test_smoke_deployment_completes(smoke_run):
    assert smoke_run.returncode == 0, smoke_run.output[-6000:] + smoke_run.serve_log.read_text()[-6000:]
    assert "Completed" in smoke_run.output
    assert api(smoke_run.api, f"/flow_runs/{smoke_run.flow_run_id}")["state"]["type"] == "COMPLETED"


def test_one_task_per_stage_in_dvc_order(smoke_run, dvc_yaml):
    runs = task_runs(smoke_run.api, smoke_run.flow_run_id)
    assert all(r["state"]["type"] == "COMPLETED" for r in runs), [(r["name"], r["state"]["type"]) for r in runs]
    names = [r["name"] for r in runs]
    stages = list(dvc_yaml["stages"])
    for stage in stages:
        assert names.count(stage) == 1, f"{stage}: {names}"
    started = sorted((r for r in runs if r["name"] in stages), key=lambda r: r["start_time"])
    assert [r["name"] for r in started] == stages
    for stage in SHARDED:
        assert {f"{stage}[{i}/{SHARDS}]" for i in range(SHARDS)} <= set(names)


def test_shards_ran_on_the_dask_workers(smoke_run):
    runs = by_name(task_runs(smoke_run.api, smoke_run.flow_run_id))
    for stage in SHARDED:
        workers = set()
        for i in range(SHARDS):
            logs = task_logs(smoke_run.api, runs[f"{stage}[{i}/{SHARDS}]"]["id"])
            where = [line for line in logs if line.startswith("shard ")]
            assert where and "Dask worker" in where[0], logs[:5]
            workers.add(where[0].split("Dask worker ")[1].split()[0])
        assert len(workers) == 2, f"{stage}: {workers}"  # both workers of the stage's local cluster did a shard


def test_stage_output_is_streamed_into_task_logs(smoke_run):
    runs = by_name(task_runs(smoke_run.api, smoke_run.flow_run_id))
    logs = task_logs(smoke_run.api, runs["train_global"]["id"])
    assert "Running stage 'train_global':" in logs
    assert "> elite train-global" in logs
    assert len(logs) > 3


def flat_keys(value, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [k for key, item in value.items() for k in flat_keys(item, f"{prefix}.{key}" if prefix else str(key))]
    return [prefix] if isinstance(value, (int, float, str, bool)) or value is None else []


def metrics_artifact(base: str, flow_run_id: str) -> str:
    """The markdown of the flow run's one `elite-metrics` artifact."""
    arts = api(
        base,
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": ["elite-metrics"]}, "flow_run_id": {"any_": [flow_run_id]}}},
    )
    assert len(arts) == 1 and arts[0]["type"] == "markdown", arts
    return arts[0]["data"]


def test_metrics_artifact(smoke_run, dvc_yaml):
    markdown = metrics_artifact(smoke_run.api, smoke_run.flow_run_id)
    for stage in dvc_yaml["stages"]:
        assert f"| {stage} | " in markdown
    section = markdown.split("## metrics/dreambench.json\n")[1].split("\n## ")[0]
    rows = {line.split(" | ")[0].lstrip("| ") for line in section.splitlines() if line.startswith("| ")}
    expected = flat_keys(json.loads((smoke_run.repo / "metrics/dreambench.json").read_text()))
    assert expected and set(expected) <= rows


def test_mlflow_parent_run_nests_the_stage_runs(smoke_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(smoke_run.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("elite")
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    parents = [r for r in runs if r.data.tags.get("prefect.flow_run_id") == smoke_run.flow_run_id]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {r.data.tags.get("stage") for r in children} >= {"train_global", "train_local", "evaluate", "register"}
    orphans = [r.info.run_name for r in runs if r is not parent and "mlflow.parentRunId" not in r.data.tags]
    assert not orphans, f"stage runs not nested under the pipeline run: {orphans}"
    assert any(key.startswith("dreambench/") for key in parent.data.metrics)


def test_stage_deps_cover_the_code_each_stage_imports(smoke_run, dvc_yaml):
    """Every elite/ module an `elite` stage process imported is a dep of that stage in dvc.yaml (up to the CLI glue
    that every command imports), or a file of the plug-in code the `plugins` stage wrote for it (data/plugins/
    <stage>.json, itself a dep): a plug-in's files are deps only on the profiles that select it."""
    command_stage = {spec["cmd"].split()[1]: name for name, spec in dvc_yaml["stages"].items()}
    root = smoke_run.repo.resolve()
    traces = [json.loads(p.read_text()) for p in smoke_run.traces.glob("*.json")]
    seen = set()
    for trace in traces:
        command = next((a for a in trace["argv"] if not a.startswith("-")), None)
        stage = command_stage.get(command)
        if stage is None:
            continue
        seen.add(stage)
        deps = [d.rstrip("/") for d in dvc_yaml["stages"][stage].get("deps", [])]
        deps += [f for d in deps if d.startswith("data/plugins/") for f in json.loads((root / d).read_text())["files"]]
        missing = set()
        for file in trace["files"]:
            path = Path(file).resolve()
            assert path.is_relative_to(root), f"{stage} imported {path}, outside the pipeline's checkout"
            rel = path.relative_to(root).as_posix()
            if is_glue(root, rel):
                continue
            if not any(rel == d or rel.startswith(d + "/") for d in deps):
                missing.add(rel)
        assert not missing, f"dvc.yaml stage {stage} imports code it does not list as deps: {sorted(missing)}"
    assert seen == set(command_stage.values()), f"no import trace for {set(command_stage.values()) - seen}"


def stale_register(repo: Path, env: dict) -> dict:
    """Make `register` (the last stage: nothing downstream) stale with a new value of one of its params;
    returns its report as it was."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    smoke = params["register"]["smoke"]
    smoke["example_steps"] = params["register"]["example_steps"] + 1  # a value never run: not in DVC's run cache
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert list(json.loads(dvc(repo, env, "status", "--json"))) == ["register"]
    return json.loads((repo / "metrics/register.json").read_text())


def test_gpu_node_worker_runs_a_deployment_as_a_dvc_experiment(smoke_run, served, session_tmp):
    """prefect.yaml as GPU nodes use it, on the server `make serve` already serves: `prefect deploy --all` adds
    elite/full-gpu and elite/smoke-gpu and leaves the served elite/full and elite/smoke as they were; a worker
    (`python -m flows.worker`, which creates the pool) takes elite/smoke-gpu with its GPU list, runs the stale
    stage (register, after a change of its params) in the checkout, saves the run as a DVC experiment and gives
    the workspace back as it was; SIGTERM stops the worker."""
    repo = smoke_run.repo
    env, base = served[0], served[1]
    env = dict(env, PREFECT_API_URL=base)
    prefect = str(BIN / "prefect")
    served_before = {name: api(base, f"/deployments/name/elite/{name}") for name in ("full", "smoke")}
    before = stale_register(repo, env)
    lock, params, report = (repo / "dvc.lock").read_bytes(), (repo / "params.yaml").read_bytes(), before
    log = session_tmp / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "flows.worker", "--pool", "gpu", "--gpus", "0"],
            cwd="/",
            env={k: v for k, v in env.items() if k != "ELITE_CHECKOUT"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as a background job of a script
        )
    try:
        wait_for(lambda: api(base, "/work_pools/gpu"), 120, "the worker's pool `gpu`", worker, log)
        deployed = run([prefect, "--no-prompt", "deploy", "--all"], repo, env)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        for name, profile in (("full-gpu", "paper"), ("smoke-gpu", "smoke")):
            deployment = api(base, f"/deployments/name/elite/{name}")
            assert deployment["work_pool_name"] == "gpu" and deployment["parameters"]["profile"] == profile
            assert deployment["parameters"]["experiment"] is True
        for name, old in served_before.items():  # make serve's deployments untouched
            new = api(base, f"/deployments/name/elite/{name}")
            assert (new["id"], new["path"], new["pull_steps"], new["updated"]) == (
                old["id"], old["path"], old["pull_steps"], old["updated"]
            )  # fmt: skip
        proc = run(
            [prefect, "deployment", "run", "elite/smoke-gpu", "--watch", "--watch-interval", "2",
             "-p", 'stages=["register"]'],
            repo,
            env,
            timeout=400,
        )  # fmt: skip
        assert proc.returncode == 0 and "Completed" in proc.stdout, proc.stdout[-3000:] + log.read_text()[-5000:]
        run_id = flow_run_id(proc.stdout)
        flow_run = api(base, f"/flow_runs/{run_id}")
        assert flow_run["work_pool_name"] == "gpu"
        markdown = metrics_artifact(base, run_id)
        messages = [e["message"] for e in api(base, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}})]
    finally:
        os.killpg(worker.pid, signal.SIGTERM) if worker.poll() is None else None
        try:
            code = worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop_process(worker)
            code = None
    assert code == 0 and "stopped!" in log.read_text(), (
        f"the worker did not stop on SIGTERM: {log.read_text()[-2000:]}"
    )
    assert subprocess.run(["pgrep", "-f", "prefect worker start --pool gpu"], capture_output=True).returncode == 1
    assert "devices: CUDA_VISIBLE_DEVICES=0" in messages, messages
    # the register stage ran (a new model version) ...
    assert "| register | ran |" in markdown, markdown
    name = experiment_name(flow_run["name"])
    shown = json.loads(dvc(repo, env, "exp", "show", "--json"))
    exps = {group["name"]: group["revs"][0] for rev in shown for group in rev.get("experiments") or []}
    assert name in exps, sorted(exps)
    saved = exps[name]["data"]["metrics"]["metrics/register.json"]["data"]
    assert saved["version"] == report["version"] + 1 and saved["run_id"] != report["run_id"], (report, saved)
    # ... saved as the experiment, and the workspace is as it was: register stale again, nothing else changed
    assert (repo / "dvc.lock").read_bytes() == lock and (repo / "params.yaml").read_bytes() == params
    assert json.loads((repo / "metrics/register.json").read_text()) == report
    assert list(json.loads(dvc(repo, env, "status", "--json"))) == ["register"]
    applied = dvc(repo, env, "exp", "apply", name)  # and it can be applied: then nothing is stale
    assert json.loads(dvc(repo, env, "status", "--json")) == {}, applied

"""Prefect flow `elite`: the DVC pipeline, one task per stage, in dvc.yaml order.

Each stage task runs `dvc repro --single-item <stage>`, so DVC decides what is up to date; tasks run one
at a time (one DVC writer per checkout; a file lock also keeps other flow runs on the same checkout
waiting). Stage output is streamed into the task's Prefect log. Stages that fetch from the network
(prepare_models, download, dreambench) retry on the paper profile. The sharded stages (mask,
evaluate) run their shards as mapped tasks in a nested flow `elite-shards-<stage>` whose task runner
is a thread pool, a local Dask cluster (`dask_workers=N`) or an existing one (`dask_address=tcp://...`;
its workers must see this checkout at the same path), then one task finishes and commits the stage
(see flows/stages.py). The flow opens an MLflow parent run and exports its id as ELITE_PARENT_RUN_ID,
so every stage's MLflow run is nested under it, and ends with a markdown artifact of the metrics.

Run it without a server: `python -m flows.elite_flow --profile smoke`; deployments: flows/serve.py.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows import experiment as X
from flows import stages as S

REPO = Path(__file__).resolve().parents[1]
FETCHING = ("prepare_models", "download", "dreambench")  # stages that download on the paper profile
RETRIES = {"paper": (2, [30, 120]), "toy": (0, 0), "smoke": (0, 0)}  # smoke and toy fetch nothing: a failure is a bug
ARTIFACT_KEY = "elite-metrics"


def _log():
    return get_run_logger().info


@task(name="stage", cache_policy=NO_CACHE)
def run_stage(repo: str, stage: str, env: dict[str, str]) -> dict:
    """`dvc repro --single-item <stage>`: runs the stage only if DVC finds it changed."""
    log = _log()
    result = "up to date"

    def sink(line: str) -> None:
        nonlocal result
        if line.startswith(f"Running stage '{stage}'"):
            result = "ran"
        elif line.startswith(f"Stage '{stage}' is cached"):
            result = "restored from the run cache"
        log(line)

    start = time.monotonic()
    S.dvc(Path(repo), ["repro", "--single-item", stage], S.tool_env(env), sink)
    return {"stage": stage, "result": result, "seconds": time.monotonic() - start}


@task(name="plan-shards", cache_policy=NO_CACHE)
def plan_shards(repo: str, stage: str, env: dict[str, str]) -> bool:
    """Whether the stage is stale (then its outputs are readied for the shards)."""
    spec = S.select(S.load_stages(Path(repo)), [stage])[0]
    return S.prepare_shards(Path(repo), spec, S.tool_env(env), _log())


@task(name="shard", cache_policy=NO_CACHE)
def run_shard(repo: str, stage: str, index: int, count: int, env: dict[str, str]) -> int:
    """`<stage cmd> --shard index/count` in the checkout (on a Dask worker: the same path must exist there)."""
    log = _log()
    log(f"shard {index}/{count} of {stage} {_where()}")
    spec = S.select(S.load_stages(Path(repo)), [stage])[0]
    S.run_logged(S.shard_command(spec, index, count), Path(repo), S.tool_env(env), log)
    return index


def _where() -> str:
    """Which Dask worker (or process) runs this task."""
    import os
    import socket

    try:
        from distributed import get_worker

        return f"on Dask worker {get_worker().address} (host {socket.gethostname()}, pid {os.getpid()})"
    except (ImportError, ValueError):
        return f"in process {os.getpid()} on {socket.gethostname()}"


@task(name="finish-shards", cache_policy=NO_CACHE)
def finish_shards(repo: str, stage: str, count: int, env: dict[str, str]) -> dict:
    spec = S.select(S.load_stages(Path(repo)), [stage])[0]
    start = time.monotonic()
    S.finish_sharded(Path(repo), spec, S.tool_env(env), _log())
    return {"stage": stage, "result": f"ran in {count} shards", "seconds": time.monotonic() - start}


@flow(name="elite-shards")
def shard_flow(repo: str, stage: str, count: int, env: dict[str, str]) -> list[int]:
    """The shards of one stage as mapped tasks, spread by this flow's task runner."""
    futures = run_shard.with_options(task_run_name=f"{stage}[{{index}}/{count}]").map(
        unmapped(repo), unmapped(stage), range(count), unmapped(count), unmapped(env)
    )
    return [future.result() for future in futures]


def shard_runner(count: int, dask_address: str | None, dask_workers: int):
    if dask_address or dask_workers:
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        # the workers report their task runs to this flow run's API (also a temporary one started without a server)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": "127.0.0.1:0",
                "env": {"PREFECT_API_URL": _api_url()},
            }
        )
    return ThreadPoolTaskRunner(max_workers=count)


def _api_url() -> str:
    from prefect.context import FlowRunContext

    return str(FlowRunContext.get().client.api_url).rstrip("/")


# --- MLflow parent run ----------------------------------------------------------------------------


def _mlflow_client(repo: Path):
    """The stages' tracking store (MLFLOW_TRACKING_URI, else the repo's mlflow.db; see elite/tracking.py)."""
    import os

    from mlflow.tracking import MlflowClient

    from elite.tracking import EXPERIMENT, check_tracking_server

    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo / 'mlflow.db'}"
    check_tracking_server(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return uri, client, experiment.experiment_id
    location = (repo / "mlruns").as_uri() if uri.startswith(("sqlite:", "file:")) else None
    return uri, client, client.create_experiment(EXPERIMENT, artifact_location=location)


# --- the flow -------------------------------------------------------------------------------------


@flow(name="elite")
def elite(
    profile: Literal["smoke", "toy", "paper"] | None = None,
    stages: list[str] | None = None,
    shards: int = 1,
    shard_stages: list[str] | None = None,
    dask_address: str | None = None,
    dask_workers: int = 0,
    repo: str | None = None,
    processes: int | None = None,
    experiment: bool = False,
) -> list[dict]:
    """Run the DVC pipeline of `repo` (default: the checkout holding this file).

    profile: set params.yaml's profile first (None: keep it). stages: a subset of dvc.yaml's stages
    (None: all). shards > 1: run mask/evaluate (or those of them in shard_stages) as that many mapped
    shard tasks, on a local Dask cluster of dask_workers processes or on the cluster at dask_address
    (else threads). processes: training processes (GPUs) of this profile, `launch.<profile>.processes` in
    params.yaml. experiment: save the run as the DVC experiment `prefect-<flow run name>` and give the workspace
    back as it was (params.yaml, dvc.lock, outputs): see flows/experiment.py.
    """
    log = _log()
    root = Path(repo).resolve() if repo else REPO
    with S.checkout_lock(root, log):
        selected = S.select(S.load_stages(root), stages)  # bad parameters fail before anything changes
        sharded = S.shardable(shard_stages)
        snapshot = X.Snapshot.take(root) if experiment else None
        name = X.experiment_name(str(flow_run.name)) if experiment else None
        try:
            results = _run(
                root, log, profile, processes, selected, sharded, (shards, dask_address, dask_workers), name
            )
            if name is not None:
                X.save(root, name, S.tool_env(), log)
        finally:
            if snapshot is not None:
                snapshot.restore(S.tool_env(), log)
    return results


def _run(
    root: Path,
    log,
    profile: str | None,
    processes: int | None,
    selected: list,
    sharded: tuple[str, ...],
    sharding: tuple[int, str | None, int],
    dvc_experiment: str | None,
) -> list[dict]:
    """The stages, in an MLflow parent run, then the metrics artifact."""
    from elite.tracking import PARENT_ENV, redact

    shards, dask_address, dask_workers = sharding

    profile = S.apply_profile(root, profile, log)
    if processes is not None:
        X.set_processes(root, profile, processes, log)
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    log(f"devices: CUDA_VISIBLE_DEVICES={gpus}" if gpus is not None else "devices: CUDA_VISIBLE_DEVICES not set")
    uri, client, experiment_id = _mlflow_client(root)
    parent = client.create_run(
        experiment_id,
        run_name=f"pipeline-{profile}",
        tags={
            "stage": "pipeline",
            "profile": profile,
            "prefect.flow_run_id": str(flow_run.id),
            "prefect.flow_run_name": str(flow_run.name),
            **({"dvc.experiment": dvc_experiment} if dvc_experiment else {}),
        },
    ).info.run_id
    client.log_param(parent, "profile", profile)
    client.log_param(parent, "stages", ",".join(s.name for s in selected))
    client.log_param(parent, "shards", shards)
    client.log_param(parent, "shard_stages", ",".join(sharded))
    log(f"MLflow parent run {parent} in {redact(uri)} ({PARENT_ENV} for the stages)")
    env = {PARENT_ENV: parent, "MLFLOW_TRACKING_URI": uri}
    retries, delays = RETRIES[profile]
    results: list[dict] = []
    try:
        for spec in selected:
            plan = plan_shards.with_options(task_run_name=f"{spec.name}:plan")
            if spec.name in sharded and shards > 1 and plan(str(root), spec.name, env):
                shard_flow.with_options(
                    name=f"elite-shards-{spec.name}",
                    task_runner=shard_runner(shards, dask_address, dask_workers),
                )(str(root), spec.name, shards, env)
                results.append(
                    finish_shards.with_options(name=spec.name, task_run_name=spec.name)(
                        str(root), spec.name, shards, env
                    )
                )
                continue
            stage_task = run_stage.with_options(name=spec.name, task_run_name=spec.name)
            if spec.name in FETCHING and retries:
                stage_task = stage_task.with_options(retries=retries, retry_delay_seconds=delays)
            results.append(stage_task(str(root), spec.name, env))
        metrics = S.read_metrics(root, selected)
        markdown = S.metrics_markdown(f"ELITE pipeline ({profile} profile)", results, metrics)
        create_markdown_artifact(
            markdown=markdown, key=ARTIFACT_KEY, description=f"metrics of the DVC pipeline, {profile} profile"
        )
        values = [_metric(k, v) for k, v in S.numeric_metrics(metrics).items()]
        for i in range(0, len(values), 1000):  # MLflow takes at most 1000 metrics per batch
            client.log_batch(parent, metrics=values[i : i + 1000])
        client.log_text(parent, markdown, "pipeline_metrics.md")
    except BaseException:
        client.set_terminated(parent, "FAILED")
        raise
    client.set_terminated(parent, "FINISHED")
    return results


def _metric(key: str, value: float):
    from mlflow.entities import Metric

    return Metric(key, value, int(time.time() * 1000), 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the Prefect flow `elite` once, without a server.")
    parser.add_argument("--profile", choices=["smoke", "toy", "paper"])
    parser.add_argument("--stages", nargs="+", help="a subset of dvc.yaml's stages")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--shard-stages", nargs="+", choices=S.SHARDABLE, help="default: all of them")
    parser.add_argument("--dask-address")
    parser.add_argument("--dask-workers", type=int, default=0)
    parser.add_argument("--processes", type=int, help="training processes (GPUs): launch.<profile>.processes")
    parser.add_argument(
        "--experiment", action="store_true", help="save the run as a DVC experiment, restore the workspace"
    )
    args = parser.parse_args(argv)
    elite(
        profile=args.profile,
        stages=args.stages,
        shards=args.shards,
        shard_stages=args.shard_stages,
        dask_address=args.dask_address,
        dask_workers=args.dask_workers,
        processes=args.processes,
        experiment=args.experiment,
    )


if __name__ == "__main__":
    main()

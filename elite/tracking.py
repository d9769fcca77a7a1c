"""MLflow tracking shared by the stages: one experiment `elite`, one run per stage.

The tracking URI comes from MLFLOW_TRACKING_URI; without it, a SQLite store `mlflow.db` with
artifacts in `mlruns/` at the repository root (the working directory of `dvc repro`). When the
Prefect flow (or anyone) sets ELITE_PARENT_RUN_ID, stage runs are nested under that pipeline run.
A tracking server that does not answer is reported before any compute starts.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from elite.errors import EliteError

EXPERIMENT = "elite"
PARENT_ENV = "ELITE_PARENT_RUN_ID"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the URI, when an http(s) tracking server does not answer /health."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise EliteError(f"MLflow tracking server {uri} answered /health with HTTP {resp.status}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EliteError(f"MLflow tracking server {uri} is unreachable ({reason}); start it or unset MLFLOW_TRACKING_URI") from None


def setup_mlflow():
    """Point mlflow at the tracking store (checked first) and the `elite` experiment; returns the module."""
    import mlflow

    uri = tracking_uri()
    check_tracking_server(uri)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:") or uri.startswith("file:"):
        artifacts = Path("mlruns").resolve().as_uri()
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


@contextmanager
def stage_run(stage: str, params: dict | None = None, resume_run_id: str | None = None) -> Iterator[object]:
    """An MLflow run for one stage, nested under $ELITE_PARENT_RUN_ID when set; params logged flat.
    `resume_run_id`: reopen that run (a resumed training stage) when this store has it; params stay as logged."""
    mlflow = setup_mlflow()
    if resume_run_id and _run_exists(mlflow, resume_run_id):
        with mlflow.start_run(run_id=resume_run_id) as run:
            yield run
        return
    parent = os.environ.get(PARENT_ENV)
    tags = {"stage": stage, **({"mlflow.parentRunId": parent} if parent else {})}
    with mlflow.start_run(run_name=stage, tags=tags) as run:
        if params:
            items = [(k, str(v)[:6000]) for k, v in params.items()]
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i : i + 100]))
        yield run


def _run_exists(mlflow, run_id: str) -> bool:
    try:
        mlflow.get_run(run_id)
        return True
    except Exception:  # MlflowException (unknown id) or a store that cannot answer
        return False

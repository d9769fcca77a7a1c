"""MLflow tracking shared by the stages: one experiment `elite`, one run per stage.

The tracking URI comes from MLFLOW_TRACKING_URI; without it, a SQLite store `mlflow.db` with
artifacts in `mlruns/` at the repository root (the working directory of `dvc repro`). When the
Prefect flow (or anyone) sets ELITE_PARENT_RUN_ID, stage runs are nested under that pipeline run.
A tracking server that does not answer is reported before any compute starts.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from elite.errors import EliteError

EXPERIMENT = "elite"
PARENT_ENV = "ELITE_PARENT_RUN_ID"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def redact(uri: str) -> str:
    """`uri` without credentials (http://user:secret@host -> http://***@host), for messages and logs."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the URI (credentials redacted), when an http(s) tracking server does not answer /health."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        parts = urllib.parse.urlsplit(uri)  # /health needs no login: ask it without the URI's credentials
        health = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])).rstrip("/") + "/health"
        with urllib.request.urlopen(health, timeout=timeout) as resp:
            if resp.status != 200:
                raise EliteError(f"MLflow tracking server {redact(uri)} answered /health with HTTP {resp.status}")
    except urllib.error.HTTPError as exc:
        raise EliteError(f"MLflow tracking server {redact(uri)} answered /health with HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EliteError(f"MLflow tracking server {redact(uri)} is unreachable ({reason}); start it or unset "
                         f"MLFLOW_TRACKING_URI") from None


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

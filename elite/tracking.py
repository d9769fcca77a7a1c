"""Where the stages record their runs: MLflow (one experiment `elite`, one run per stage) and the names of
their FiftyOne datasets.

The tracking URI comes from MLFLOW_TRACKING_URI; without it, a SQLite store `mlflow.db` with artifacts in
`mlruns/` at the repository root: DVC_ROOT, which DVC sets for every stage it runs (for `dvc exp run
--temp` and queued experiments it names the repository the experiment came from, not the temporary copy
the stages run in), else the working directory. So experiments log and register into the repository's
store and the register gate compares against its real champion. When the Prefect flow (or anyone) sets
ELITE_PARENT_RUN_ID, stage runs are nested under that pipeline run. A tracking server that does not
answer is reported before any compute starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from elite.errors import EliteError

EXPERIMENT = "elite"
PARENT_ENV = "ELITE_PARENT_RUN_ID"
PIPELINE_TAG = "elite.pipeline"  # on the run that groups the stage runs of one `dvc repro` / `dvc exp run`
METRICS_DIGEST_TAG = "dreambench.sha256"  # on the evaluate run: the SHA-256 of the metrics file it wrote
# MLflow 3's UI opens an experiment of this kind on its runs table (not on the GenAI overview)
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def repo_root() -> Path:
    """The repository the stages belong to (DVC_ROOT under DVC, else the working directory)."""
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def dvc_experiment() -> str | None:
    """The DVC experiment these stages run for (`dvc exp run`, --temp, --queue), else None."""
    return os.environ.get("DVC_EXP_NAME") or None


def scoped_dataset(name: str) -> str:
    """The FiftyOne dataset name a stage uses for `name`: `name` itself, or `name-<experiment>` when the stage
    runs in a temporary copy for a DVC experiment (--temp, --queue), so that experiments running at once do
    not share one dataset and none replaces the workspace's with samples in a copy that is deleted after it."""
    exp = dvc_experiment()
    return f"{name}-{exp}" if exp and Path.cwd().resolve() != repo_root() else name


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def require_store(what: str) -> str:
    """The tracking URI for reading a model that must already exist: a one-line error when MLFLOW_TRACKING_URI
    is unset and there is no mlflow.db where the default store would be (outside the repository), instead of
    letting MLflow create an empty store there and fail later."""
    uri = tracking_uri()
    if not os.environ.get("MLFLOW_TRACKING_URI") and not (repo_root() / "mlflow.db").is_file():
        raise EliteError(
            f"{what}: no MLflow store here ({repo_root() / 'mlflow.db'} does not exist) and MLFLOW_TRACKING_URI is "
            "not set; run from the repository that registered it or set MLFLOW_TRACKING_URI (e.g. "
            "sqlite:////path/to/elite-pipeline/mlflow.db or http://mlflow-server:5000)"
        )
    return uri


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
        health = (
            urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])).rstrip("/") + "/health"
        )
        with urllib.request.urlopen(health, timeout=timeout) as resp:
            if resp.status != 200:
                raise EliteError(f"MLflow tracking server {redact(uri)} answered /health with HTTP {resp.status}")
    except urllib.error.HTTPError as exc:
        raise EliteError(f"MLflow tracking server {redact(uri)} answered /health with HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EliteError(
            f"MLflow tracking server {redact(uri)} is unreachable ({reason}); start it or unset MLFLOW_TRACKING_URI"
        ) from None


def setup_mlflow():
    """Point mlflow at the tracking store (checked first) and the `elite` experiment; returns the module."""
    import mlflow

    uri = tracking_uri()
    check_tracking_server(uri)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:") or uri.startswith("file:"):
        artifacts = (repo_root() / "mlruns").as_uri()
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)
    experiment = mlflow.set_experiment(EXPERIMENT)
    if experiment.tags.get(KIND_TAG) != KIND:
        mlflow.set_experiment_tag(KIND_TAG, KIND)
    return mlflow


@contextmanager
def stage_run(
    stage: str,
    params: dict | None = None,
    resume_run_id: str | None = None,
    datasets: list[tuple[str | Path, str]] = (),
) -> Iterator[object]:
    """An MLflow run for one stage, nested under the pipeline run (`pipeline_parent`); params logged flat;
    `datasets`: (file, context) pairs logged as the run's dataset inputs (`log_dataset`).
    `resume_run_id`: reopen that run (a resumed training stage) when this store has it; params stay as logged."""
    mlflow = setup_mlflow()
    if resume_run_id and _run_exists(mlflow, resume_run_id):
        with mlflow.start_run(run_id=resume_run_id) as run:
            yield run
        return
    parent, grouped = pipeline_parent(mlflow)
    exp = dvc_experiment()
    tags = {
        "stage": stage,
        **({"mlflow.parentRunId": parent} if parent else {}),
        **({"dvc.experiment": exp} if exp else {}),
    }
    status = "FAILED"
    try:
        with mlflow.start_run(run_name=f"{stage} ({exp})" if exp else stage, tags=tags) as run:
            if params:
                items = [(k, str(v)[:6000]) for k, v in params.items()]
                for i in range(0, len(items), 100):
                    mlflow.log_params(dict(items[i : i + 100]))
            for path, context in datasets:
                log_dataset(mlflow, path, context)
            yield run
        status = "FINISHED"
    finally:
        if grouped:  # the pipeline run ends (again) with each of its stages: its end time is the last stage's
            mlflow.MlflowClient().set_terminated(parent, status)


def pipeline_parent(mlflow) -> tuple[str | None, bool]:
    """(run id of the pipeline run to nest under, whether this module keeps its status). The Prefect flow
    names it in $ELITE_PARENT_RUN_ID; under `dvc repro` / `dvc exp run` it is one run per DVC invocation
    (and experiment), tagged `elite.pipeline`, created by the first stage that logs."""
    parent = os.environ.get(PARENT_ENV)
    if parent:
        return parent, False
    key = dvc_invocation()
    if key is None:
        return None, False
    client = mlflow.MlflowClient()
    experiment_id = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    found = client.search_runs([experiment_id], filter_string=f"tags.`{PIPELINE_TAG}` = '{key}'", max_results=1)
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")  # again, while this stage runs
        return found[0].info.run_id, True
    exp = dvc_experiment()
    tags = {PIPELINE_TAG: key, "orchestrator": "dvc", **({"dvc.experiment": exp} if exp else {})}
    run = client.create_run(experiment_id, run_name=f"dvc exp run {exp}" if exp else "dvc repro", tags=tags)
    return run.info.run_id, True


def dvc_invocation() -> str | None:
    """The DVC command running this stage (DVC_STAGE is set): host, pid and start time of the nearest ancestor
    process that runs DVC (`dvc repro`, `dvc exp run`, a queue worker), plus the experiment name. None outside DVC."""
    if not os.environ.get("DVC_STAGE"):
        return None
    import psutil

    try:
        proc = psutil.Process().parent()
        while proc is not None:
            cmd = proc.cmdline()
            if any(Path(arg).name == "dvc" for arg in cmd[:2]) or cmd[1:3] == ["-m", "dvc"]:
                return f"{socket.gethostname()}/{proc.pid}/{proc.create_time():.2f}/{dvc_experiment() or ''}"
            proc = proc.parent()
    except psutil.Error:
        return None
    return None


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def log_dataset(mlflow, path: str | Path, context: str) -> None:
    """A JSON Lines manifest (or a JSON list, e.g. DreamBench's subjects.json) as an MLflow dataset input of the
    active run: the runs table's Dataset column, with digest, row count and schema (lists stored as JSON)."""
    import pandas as pd

    path = Path(path)
    text = path.read_text()
    rows = (
        json.loads(text)
        if path.suffix == ".json"
        else [json.loads(line) for line in text.splitlines() if line.strip()]
    )
    frame = pd.DataFrame(
        [{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()} for row in rows]
    )
    name = f"{path.parent.name}/{path.stem}".lstrip("/")  # curated/global, masks/local, dreambench/subjects
    with warnings.catch_warnings():  # mlflow registers two equal local-file sources and says so on every call
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        dataset = mlflow.data.from_pandas(frame, source=path.resolve().as_uri(), name=name)
    mlflow.log_input(dataset, context=context)


def _run_exists(mlflow, run_id: str) -> bool:
    try:
        mlflow.get_run(run_id)
        return True
    except Exception:  # MlflowException (unknown id) or a store that cannot answer
        return False

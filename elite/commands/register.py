"""Commands `register` (the register stage) and `mlflow-ui` (the MLflow UI on the default local store)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from elite.config import load_params
from elite.errors import EliteError


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "register",
        help="log the trained ELITE as an MLflow pyfunc model, register it, gate the champion",
        description="Register the ELITE weights of params register.weights as a new version of the MLflow "
        "model register.model_name: "
        "it gets the candidate alias; the champion alias moves to it only when every gate "
        "in register.gates passes. The decision is written to register.report.",
    )
    r.set_defaults(func=register_cmd)

    u = sub.add_parser(
        "mlflow-ui", help="start the MLflow UI on 127.0.0.1 for the default local store (mlflow.db, mlruns/)"
    )
    u.add_argument("--port", type=int, default=5000, help="port (default: %(default)s)")
    u.set_defaults(func=mlflow_ui_cmd)


def register_cmd(args) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our tqdm bar shows the progress
    from elite.config.prepared import check_prepared
    from elite.registry.register import register_model

    params = load_params(args.params, args.profile)
    check_prepared(params, params.register.base)
    record = register_model(params)
    aliases = ", ".join(record["aliases"])
    print(f"{record['model_name']} version {record['version']} ({aliases}): {record['decision']}: {record['reason']}")


def ui_command(port: int) -> list[str]:
    """The `mlflow ui` command line for the repository's default store (see elite.tracking)."""
    from elite.tracking import repo_root, tracking_uri

    mlflow_bin = shutil.which(
        "mlflow", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    if mlflow_bin is None:
        raise EliteError("the `mlflow` command is not installed in this environment; run `make setup`")
    return [
        mlflow_bin,
        "ui",
        "--backend-store-uri",
        tracking_uri(),
        "--default-artifact-root",
        (repo_root() / "mlruns").as_uri(),
        "--no-serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def runs_page(base: str, store: str) -> str:
    """The UI address that opens experiment `elite` on its runs table. MLflow 3.17's UI picks GenAI or model
    training from `?workflowType=` or the browser's last choice (default GenAI), not from the experiment."""
    from mlflow import MlflowClient

    from elite.tracking import EXPERIMENT

    experiment = MlflowClient(tracking_uri=store).get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return f"{base}/#/experiments?workflowType=machine_learning"
    return f"{base}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"


def mlflow_ui_cmd(args) -> int:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(("http://", "https://")):
        from elite.tracking import redact

        print(
            f"MLFLOW_TRACKING_URI points at a tracking server: open {redact(uri)} in a browser (its "
            "UI is already running)"
        )
        return 0
    from elite.ports import require_free_port

    require_free_port("127.0.0.1", args.port, "MLflow UI", f"make mlflow-ui MLFLOW_PORT={args.port + 1}")
    cmd = ui_command(args.port)
    print(f"MLflow UI on http://127.0.0.1:{args.port} (store {cmd[3]}); Ctrl-C stops it", flush=True)
    print(f"training runs: {runs_page(f'http://127.0.0.1:{args.port}', cmd[3])}", flush=True)
    os.execv(cmd[0], cmd)
    return 0  # not reached

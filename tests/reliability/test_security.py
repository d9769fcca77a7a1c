"""Security (issue 9): we write safetensors (plus JSON/PNG/CSV/text), the authors' .pt and SAM's .pth are read
only through torch.load(weights_only=True), nothing deserialises pickles or runs remote code, servers we
start bind 127.0.0.1 unless told otherwise, and no secret reaches params, MLflow or the logs."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import torch
import yaml
from rel_helpers import REPO, assert_safe_formats, write_params

SOURCE_DIRS = ("elite", "flows", "examples", "bench")


def sources() -> dict[str, ast.Module]:
    files = sorted(p for d in SOURCE_DIRS for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts)
    assert len(files) > 50
    return {p.relative_to(REPO).as_posix(): ast.parse(p.read_text(), str(p)) for p in files}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return "?"


def calls(trees: dict[str, ast.Module], *names: str):
    """(file, innermost enclosing function, call) for every call of one of `names` (e.g. 'torch.load')."""
    for path, tree in trees.items():
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and dotted(node.func) in names:
                around = [f for f in funcs if f.lineno <= node.lineno <= f.end_lineno]
                yield path, max(around, key=lambda f: f.lineno).name if around else "<module>", node


def keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_torch_load_only_with_weights_only():
    found = {
        (path, owner)
        for path, owner, call in calls(sources(), "torch.load")
        if not (
            isinstance(keyword(call, "weights_only"), ast.Constant) and keyword(call, "weights_only").value is True
        )
    }
    assert not found, f"torch.load without weights_only=True: {sorted(found)}"
    readers = {(path, owner) for path, owner, _ in calls(sources(), "torch.load")}
    # the authors' global_mapper.pt / local_mapper.pt and SAM's .pth, and nothing else
    assert {path for path, _ in readers} == {"elite/models/official.py", "elite/data/sam.py"}, readers


def test_we_write_safetensors_not_pickles():
    trees = sources()
    # the one torch.save: the smoke profile's tiny SAM, written in Meta's release format (a .pth state dict) so that
    # the same torch.load(weights_only=True) path reads it and the real sam_vit_h_4b8939.pth
    writers = {(path, owner) for path, owner, _ in calls(trees, "torch.save")}
    assert writers == {("elite/data/sam.py", "write_tiny_sam")}, writers
    unsafe = [
        "pickle.load",
        "pickle.loads",
        "pickle.dump",
        "pickle.dumps",
        "pickle.Unpickler",
        "dill.load",
        "joblib.load",
        "joblib.dump",
        "yaml.load",
        "yaml.unsafe_load",
        "yaml.full_load",
        "marshal.loads",
        "eval",
        "exec",
        "numpy.save",
        "np.save",
        "cloudpickle.dump",
        "cloudpickle.load",
    ]
    found = [(path, owner, dotted(call.func)) for path, owner, call in calls(trees, *unsafe)]
    assert not found, found
    for path, owner, call in calls(trees, "np.load", "numpy.load"):
        allow = keyword(call, "allow_pickle")
        assert allow is None or (isinstance(allow, ast.Constant) and allow.value is False), (path, owner)


def test_no_trust_remote_code():
    for d in SOURCE_DIRS:
        for path in (REPO / d).rglob("*.py"):
            assert "trust_remote_code" not in path.read_text(), path


def test_model_and_checkpoint_files_are_safetensors_json_or_text(smoke_models, tmp_path):
    """What prepare-models built (smoke) and what a training checkpoint holds, by file type."""
    assert_safe_formats(smoke_models, allow_sam_pth=True)

    from accelerate import Accelerator

    from elite.models.elite_model import EliteModel
    from elite.train.checkpoint import checkpoints, load_checkpoint, save_checkpoint

    model = EliteModel.from_pretrained(smoke_models / "elite")
    params = [p for p in model.parameters()][:2]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    history = [
        {
            "step": 1,
            "loss": 0.5,
            "loss_ldm": 0.4,
            "loss_reg": 0.1,
            "lr": 1e-3,
            "grad_norm": 1.0,
            "images_per_second": 2.0,
        }
    ]
    accelerator = Accelerator(cpu=True)
    save_checkpoint(
        accelerator,
        tmp_path,
        1,
        model.save_pretrained,
        optimizer,
        scheduler,
        history,
        {"stage": "test", "fingerprint": "f"},
        keep=1,
    )
    assert_safe_formats(tmp_path)
    saved = {k: v.clone() for k, v in optimizer.state_dict()["state"][0].items()}
    fresh = torch.optim.AdamW(params, lr=1e-3)
    back = load_checkpoint(
        checkpoints(tmp_path)[-1], model, fresh, torch.optim.lr_scheduler.LambdaLR(fresh, lambda _: 1.0), accelerator
    )
    assert back == history
    assert all(torch.equal(fresh.state_dict()["state"][0][k], v) for k, v in saved.items())


def test_servers_bind_loopback_by_default():
    from elite.commands.register import ui_command

    cmd = ui_command(5123)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"  # `elite mlflow-ui` / `make mlflow-ui`
    trees = sources()
    hosts = [
        keyword(call, "default")
        for path, _, call in calls({"flows/serve.py": trees["flows/serve.py"]}, "parser.add_argument")
        if isinstance(call.args[0], ast.Constant) and call.args[0].value == "--host"
    ]
    assert [h.value for h in hosts] == ["127.0.0.1"]  # `make serve`: the Prefect server
    cluster = [
        node
        for node in ast.walk(trees["flows/elite_flow.py"])
        if isinstance(node, ast.Dict) and "host" in [k.value for k in node.keys if isinstance(k, ast.Constant)]
    ]
    assert cluster, "the local Dask cluster's settings were not found"
    for node in cluster:  # the local Dask cluster of the sharded stages: scheduler, workers and dashboard
        values = {k.value: v.value for k, v in zip(node.keys, node.values) if isinstance(v, ast.Constant)}
        assert values["host"] == "127.0.0.1" and values["dashboard_address"].startswith("127.0.0.1:")
    for path in [
        *(p for d in SOURCE_DIRS for p in (REPO / d).rglob("*.py")),
        REPO / "Makefile",
        REPO / "prefect.yaml",
        REPO / "dvc.yaml",
    ]:
        text = path.read_text()
        assert "0.0.0.0" not in text, path


SECRET_KEY = re.compile(r"pass(word)?|secret|token|credential|api_?key|access_?key", re.I)


def test_params_hold_no_secrets():
    def walk(node, where=""):
        if isinstance(node, dict):
            for key, value in node.items():
                assert not SECRET_KEY.search(str(key)), (
                    f"params.yaml: {where}{key} looks like a secret; use the environment"
                )
                walk(value, f"{where}{key}.")
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(yaml.safe_load((REPO / "params.yaml").read_text()))


def test_secrets_in_the_environment_reach_no_params_tags_or_logs(tmp_path, smoke_models, monkeypatch, caplog):
    """Stages run with credentials in the environment (as on a team setup); none of them may be logged."""
    import mlflow

    from elite.cli import main
    from elite.tracking import tracking_uri

    secrets = {
        "MLFLOW_TRACKING_PASSWORD": "mlflow-pw-5eCr3t",
        "MLFLOW_TRACKING_TOKEN": "mlflow-token-5eCr3t",
        "AWS_ACCESS_KEY_ID": "AKIA5ECR3TKEY",
        "AWS_SECRET_ACCESS_KEY": "aws-5eCr3t-key",
        "HF_TOKEN": "hf_5eCr3t",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    root = tmp_path / "project"
    write_params(root / "params.yaml")
    shutil.copytree(smoke_models / "sam", root / "models/pretrained/sam")
    (root / "data/curated").mkdir(parents=True)
    (root / "data/curated/local.jsonl").write_text("")
    out, err = io.StringIO(), io.StringIO()
    client = mlflow.MlflowClient(tracking_uri())
    with contextlib.chdir(root), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["--params", "params.yaml", "dreambench"]) == 0
        assert main(["--params", "params.yaml", "mask"]) == 0
    logged = []
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            logged += [json.dumps(run.data.params), json.dumps(run.data.tags), json.dumps(run.data.metrics)]
    assert any('"dreambench.source"' in entry for entry in logged)  # the runs of these stages are there
    store = Path(tracking_uri().removeprefix("sqlite:///"))
    everything = "\n".join(
        [*logged, out.getvalue(), err.getvalue(), caplog.text, store.read_bytes().decode("latin-1")]
    )
    for key, value in secrets.items():
        assert value not in everything, f"{key} was logged"

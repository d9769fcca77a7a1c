"""Promotion gates, metrics files, the register section and the commands' early errors (no server)."""

from __future__ import annotations

import json

import pytest
import yaml

from elite.config import parse_params
from elite.config.register import Gate
from elite.errors import EliteError
from elite.registry.gates import check_gate, decide, load_metrics, lookup, metric_key, numeric_leaves


def gate(metric="overall.clip_t", higher=True, tolerance=0.01, limit=None) -> Gate:
    return Gate(metric=metric, higher_is_better=higher, tolerance=tolerance, limit=limit)


def test_numeric_leaves_flatten_dicts_and_lists_and_skip_non_numbers():
    data = {
        "overall": {"clip_t": 0.25, "images": 4, "ok": True, "missing": None, "name": "x"},
        "sweep": {"lam_0.8": {"dino_i": 0.5}},
        "runs": [{"s": 1.5}, 2],
        "bad": float("nan"),
    }
    assert numeric_leaves(data) == {
        "overall.clip_t": 0.25,
        "overall.images": 4.0,
        "sweep.lam_0.8.dino_i": 0.5,
        "runs.0.s": 1.5,
        "runs.1": 2.0,
    }
    assert metric_key("sweep.lam_0.8.dino_i") == "dreambench.sweep.lam_0.8.dino_i"
    assert metric_key("subjects.rc car(1).clip_t") == "dreambench.subjects.rc car_1_.clip_t"


@pytest.mark.parametrize(
    "value,champion,passed",
    [(0.250, 0.250, True), (0.241, 0.250, True), (0.239, 0.250, False), (0.300, 0.250, True), (0.1, None, True)],
)
def test_higher_is_better_gate_with_tolerance(value, champion, passed):
    result = check_gate(gate(), value, champion, "champion v3")
    assert result.passed is passed
    if not passed:
        assert result.reason == f"overall.clip_t {value:.4f} < champion v3 {champion:.4f} - tolerance 0.01"


def test_lower_is_better_gate_and_absolute_limit():
    fid = gate("overall.fid", higher=False, tolerance=1.0, limit=30.0)
    assert check_gate(fid, 20.9, 20.0, "champion v1").passed
    assert not check_gate(fid, 21.5, 20.0, "champion v1").passed
    first = check_gate(fid, 31.0, None, "champion")  # no champion: only the limit applies
    assert not first.passed and "31.0000 > limit 30.0000" in first.reason
    assert check_gate(gate(limit=0.2), 0.21, None, "champion").passed
    assert not check_gate(gate(limit=0.2), 0.19, 0.10, "champion v2").passed  # better than champion, under the limit


def test_decide_promotes_only_when_every_gate_passes():
    gates = [gate("overall.clip_t", tolerance=0.005), gate("overall.dino_i", tolerance=0.01)]
    champion = {metric_key("overall.clip_t"): 0.25, metric_key("overall.dino_i"): 0.60}
    metrics = {"overall": {"clip_t": 0.248, "dino_i": 0.70}}
    ok = decide(gates, metrics, champion, "champion v4", "m.json")
    assert ok.promote and ok.reason.startswith("not worse than champion v4: overall.clip_t 0.2480")
    bad = decide(gates, {"overall": {"clip_t": 0.240, "dino_i": 0.70}}, champion, "champion v4", "m.json")
    assert (
        not bad.promote and bad.reason == "gates failed: overall.clip_t 0.2400 < champion v4 0.2500 - tolerance 0.005"
    )
    assert [g.passed for g in bad.gates] == [False, True]
    first = decide(gates, metrics, None, "champion", "m.json")
    assert first.promote and first.reason.startswith("no champion yet")
    # a champion registered before a gate existed has no value for it: compared with nothing, noted
    partial = decide(gates, metrics, {metric_key("overall.clip_t"): 0.25}, "champion v1", "m.json")
    assert partial.promote and "overall.dino_i 0.7000 no champion v1 value to compare" in partial.reason


def test_the_floor_holds_whatever_the_champion():
    gates = [gate("overall.clip_t", tolerance=0.005), gate("overall.fid", higher=False, tolerance=1.0)]
    floor = {"overall.clip_t": 0.30, "overall.fid": 20.0}
    champion = {metric_key("overall.clip_t"): 0.285, metric_key("overall.fid"): 21.5}  # a champion that drifted
    drifted = {"overall": {"clip_t": 0.281, "fid": 22.4}}  # within tolerance of that champion ...
    bad = decide(gates, drifted, champion, "champion v9", "m.json", floor, 0.01)
    assert not bad.promote  # ... but beyond the fixed floor (0.30 - 0.01, 20.0 + 0.01)
    assert bad.reason == (
        "gates failed: overall.clip_t 0.2810 < floor 0.3000 - tolerance 0.01; "
        "overall.fid 22.4000 > floor 20.0000 + tolerance 0.01"
    )
    assert [g.floor for g in bad.gates] == [0.30, 20.0]
    ok = decide(gates, {"overall": {"clip_t": 0.295, "fid": 20.005}}, None, "champion", "m.json", floor, 0.01)
    assert ok.promote and "overall.clip_t 0.2950 >= floor 0.3000 - 0.01" in ok.reason
    # without a floor for a metric only the champion counts
    assert decide(gates, drifted, champion, "champion v9", "m.json", {}, 0.01).promote


def test_register_names_and_floors_per_profile(repo_root):
    raw = _raw_params(repo_root)
    names = {p: parse_params(raw, profile=p).register.model_name for p in ("smoke", "toy", "paper")}
    assert names == {"smoke": "elite-smoke", "toy": "elite-toy", "paper": "elite-paper"}
    toy = parse_params(raw, profile="toy").register
    assert (
        set(toy.floor) == {"overall.clip_t", "overall.dino_i"}
        and parse_params(raw, profile="smoke").register.floor == {}
    )
    raw["register"]["toy"]["floor"] = {"overall.clip_i": 0.5}
    with pytest.raises(
        EliteError, match=r"^params\.yaml: register: .*floor names 'overall\.clip_i', which no gate checks"
    ):
        parse_params(raw, profile="toy")


def test_lookup_names_the_missing_path_and_what_exists():
    with pytest.raises(EliteError, match=r"m\.json: no number at 'overall\.clipt' .*overall\.clip_t"):
        lookup({"overall": {"clip_t": 0.2}}, "overall.clipt", "m.json")


def test_load_metrics_errors(tmp_path):
    with pytest.raises(EliteError, match="metrics file not found; run the evaluate stage"):
        load_metrics(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(EliteError, match=r"bad\.json: not valid JSON"):
        load_metrics(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(EliteError, match="expected a JSON object"):
        load_metrics(tmp_path / "list.json")


def _raw_params(repo_root) -> dict:
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def test_register_section_profiles_and_typos(repo_root):
    raw = _raw_params(repo_root)
    smoke, paper = parse_params(raw, profile="smoke"), parse_params(raw, profile="paper")
    assert smoke.generate.steps < paper.generate.steps  # the serving defaults: params `generate`
    smoke, paper = smoke.register, paper.register
    assert smoke.copy_base
    assert not paper.copy_base and paper.base_reference and paper.cuda_dtype == "float16"
    raw["register"]["gates"][0]["toleranse"] = 0.1
    with pytest.raises(EliteError, match=r"unknown key register\.gates\.0\.toleranse"):
        parse_params(raw, profile="smoke")
    raw = _raw_params(repo_root)
    raw["register"]["gates"][0]["tolerance"] = -0.1
    with pytest.raises(EliteError, match=r"register\.gates\.0\.tolerance"):
        parse_params(raw, profile="smoke")


def test_register_fails_early_on_missing_inputs(params, smoke_models, tmp_path):
    from elite.registry.register import register_model

    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"overall": {"clip_t": 0.2, "dino_i": 0.5}}))
    base = dict(
        weights=str(smoke_models / "elite"),
        base=str(smoke_models / "base"),
        metrics=str(metrics),
        report=str(tmp_path / "r.json"),
    )
    cases = [
        ({"weights": str(tmp_path)}, "no ELITE weights"),
        ({"base": str(tmp_path)}, "not a Stable Diffusion folder"),
        ({"metrics": str(tmp_path / "none.json")}, "metrics file not found"),
        ({"gates": [gate("overall.clip_i")]}, "no number at 'overall.clip_i'"),
    ]
    for update, message in cases:
        with pytest.raises(EliteError, match=message):
            register_model(params, params.register.model_copy(update={**base, **update}))
    assert not (tmp_path / "r.json").exists()


def test_cli_register_error_is_one_line_exit_2(repo_root, tmp_path, capsys, monkeypatch):
    from elite.cli import main

    raw = _raw_params(repo_root)
    raw["register"]["metrics"] = str(tmp_path / "missing.json")
    raw["register"]["weights"] = str(tmp_path / "no-weights")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["--params", str(tmp_path / "params.yaml"), "register"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no-weights: no ELITE weights" in err and len(err.splitlines()) == 1


def test_mlflow_ui_command_uses_the_default_store_on_loopback(monkeypatch, tmp_path, capsys):
    from types import SimpleNamespace

    from elite.commands.register import mlflow_ui_cmd, ui_command

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    cmd = ui_command(5123)
    assert cmd[1] == "ui" and cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cmd[cmd.index("--default-artifact-root") + 1] == (tmp_path / "mlruns").as_uri()
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "5123"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team.example:5000")
    assert mlflow_ui_cmd(SimpleNamespace(port=5000)) == 0  # a team server has its own UI: nothing is started
    assert "http://mlflow.team.example:5000" in capsys.readouterr().out


def test_a_model_that_cannot_load_is_not_registered(params, smoke_models, tmp_path):
    """verify: the logged model is loaded back and run before registration (local SQLite store)."""
    import shutil

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from elite.registry.register import register_model

    broken = tmp_path / "base"
    shutil.copytree(smoke_models / "base", broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"overall": {"clip_t": 0.2, "dino_i": 0.5}}))
    cfg = params.register.model_copy(
        update={
            "model_name": "elite-broken",
            "weights": str(smoke_models / "elite"),
            "base": str(broken),
            "metrics": str(metrics),
            "report": str(tmp_path / "r.json"),
        }
    )
    with pytest.raises(
        EliteError, match="the logged model failed to load or to run its input example.*nothing was registered"
    ):
        register_model(params, cfg)
    with pytest.raises(MlflowException, match="not found"):
        MlflowClient().get_registered_model("elite-broken")
    assert not (tmp_path / "r.json").exists()

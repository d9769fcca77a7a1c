"""Prepared models carry their profile: `prepare_models` stamps every folder, and the train, evaluate and
register commands refuse models prepared for another profile or from other params, in one line that names
the command preparing the right ones."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from elite.config import load_params
from elite.config.prepared import STAMP, config_hash
from elite.prepare import FOLDERS


@pytest.fixture
def checkout(smoke_models, tmp_path, monkeypatch):
    """A working directory whose models/pretrained came from the smoke profile."""
    shutil.copytree(smoke_models, tmp_path / "models" / "pretrained")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(capsys, *args) -> tuple[int, str]:
    from elite.cli import main

    code = main(list(args))
    return code, capsys.readouterr().err.strip()


def test_prepare_models_stamps_every_folder_with_profile_and_params_hash(smoke_models, params, repo_root):
    for name in FOLDERS:
        found = json.loads((smoke_models / name / STAMP).read_text())
        assert found == {"profile": "smoke", "config_sha256": config_hash(params)}, name
    # the hash follows the params that build the models, and only those
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["models"]["seed"] = 1
    from elite.config import parse_params

    assert config_hash(parse_params(raw, profile="smoke")) != config_hash(params)
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["train_global"]["learning_rate"] = 1.0
    assert config_hash(parse_params(raw, profile="smoke")) == config_hash(params)
    assert config_hash(load_params(repo_root / "params.yaml", profile="paper")) != config_hash(params)


@pytest.mark.parametrize("command", ["train-global", "train-local", "evaluate", "register"])
def test_models_of_another_profile_are_a_one_line_error(checkout, repo_root, capsys, command):
    code, err = _cli(capsys, "--params", str(repo_root / "params.yaml"), "--profile", "paper", command)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err == (
        "error: models/pretrained/base: prepared for the smoke profile, this command runs paper; prepare the paper "
        "models first: `elite --profile paper prepare-models` (or `dvc repro prepare_models`)"
    )


def test_models_from_other_params_are_a_one_line_error(checkout, repo_root, capsys):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["models"]["seed"] = 7
    (checkout / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    code, err = _cli(capsys, "--params", str(checkout / "params.yaml"), "--profile", "smoke", "train-global")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "models/pretrained/base: prepared from other smoke params (params.yaml models changed since)" in err
    assert "`elite --profile smoke prepare-models`" in err


def test_models_of_the_same_profile_pass_the_check(checkout, repo_root, capsys):
    # the command goes on to its own inputs: here the training manifest is missing
    code, err = _cli(capsys, "--params", str(repo_root / "params.yaml"), "--profile", "smoke", "train-global")
    assert code == 2 and "prepared" not in err and "global.jsonl" in err, err
    # a folder without a stamp (models put there by hand) is not checked
    for name in ("base", "elite"):  # the folders train-global reads (train_global.base, .init)
        (checkout / "models" / "pretrained" / name / STAMP).unlink()
    code, err = _cli(capsys, "--params", str(repo_root / "params.yaml"), "--profile", "paper", "train-global")
    assert code == 2 and "prepared for" not in err, err

"""The stamp of prepared models: which profile and which params built a folder of models.dir.

`elite prepare-models` writes `prepared.json` into every folder it makes (base, image_encoder, elite, sam,
clip_eval, dino_eval, probes): the profile and the SHA-256 of the params that decide those models (the
`models` section, plus `toy` on the toy profile). The train, evaluate and register commands check the
folders they read before any work: models prepared for another profile, or from other params, are a
one-line error naming the command that prepares the right ones. A folder without a stamp (models you put
there yourself) is not checked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from elite.errors import EliteError

STAMP = "prepared.json"


def models_config(params) -> dict:
    """The params that decide what prepare-models builds for this profile."""
    config = {"profile": params.profile, "models": params.models.model_dump()}
    if params.profile == "toy":
        config["toy"] = params.toy.model_dump()
    return config


def config_hash(params) -> str:
    text = json.dumps(models_config(params), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def stamp(params) -> dict:
    return {"profile": params.profile, "config_sha256": config_hash(params)}


def prepare_command(profile: str) -> str:
    return f"`elite --profile {profile} prepare-models` (or `dvc repro prepare_models`)"


def check_prepared(params, *folders: str | Path) -> None:
    """A one-line EliteError when one of `folders` carries a stamp of another profile or other params."""
    want = stamp(params)
    for folder in folders:
        path = Path(folder) / STAMP
        if not path.is_file():
            continue
        try:
            found = json.loads(path.read_text())
            profile, digest = found["profile"], found["config_sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            raise EliteError(
                f"{path}: unreadable stamp of prepared models; prepare them again: {prepare_command(params.profile)}"
            ) from None
        if profile != want["profile"]:
            raise EliteError(
                f"{folder}: prepared for the {profile} profile, this command runs {params.profile}; prepare the "
                f"{params.profile} models first: {prepare_command(params.profile)}"
            )
        if digest != want["config_sha256"]:
            sections = "models and toy" if params.profile == "toy" else "models"
            raise EliteError(
                f"{folder}: prepared from other {params.profile} params (params.yaml {sections} changed since); "
                f"prepare them again: {prepare_command(params.profile)}"
            )

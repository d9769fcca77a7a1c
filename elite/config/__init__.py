"""Load params.yaml into typed config: `load_params()` -> `Params`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML, YAMLError

from elite.config.base import PROFILES, Section, build_section, closest
from elite.config.baselines import BaselinesConfig
from elite.config.data import CurateConfig, DownloadConfig, MaskConfig
from elite.config.evaluate import DreambenchConfig, EvaluateConfig
from elite.config.models import GenerateConfig, ModelsConfig
from elite.config.plugins import PluginsConfig
from elite.config.register import RegisterConfig
from elite.config.toy import ToyConfig
from elite.config.train import LaunchConfig, TrainGlobalConfig, TrainLocalConfig
from elite.errors import EliteError

# section name -> typed model. Stages add their own section here.
SECTIONS: dict[str, type[Section]] = {
    "plugins": PluginsConfig,
    "models": ModelsConfig,
    "generate": GenerateConfig,
    "download": DownloadConfig,
    "curate": CurateConfig,
    "mask": MaskConfig,
    "train_global": TrainGlobalConfig,
    "train_local": TrainLocalConfig,
    "launch": LaunchConfig,
    "dreambench": DreambenchConfig,
    "evaluate": EvaluateConfig,
    "register": RegisterConfig,
    "baselines": BaselinesConfig,
    "toy": ToyConfig,
}


class Params:
    """The validated params.yaml for one profile; sections are attributes (params.models, ...)."""

    def __init__(self, profile: str, sections: dict[str, Section], source: str) -> None:
        self.profile = profile
        self.source = source
        self._sections = sections

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_sections"][name]
        except KeyError:
            raise AttributeError(name) from None

    def flat(self) -> dict[str, Any]:
        """All values as dotted keys (for MLflow params)."""
        out: dict[str, Any] = {"profile": self.profile}
        for name, section in self._sections.items():
            for key, value in section.model_dump().items():
                out[f"{name}.{key}"] = value
        return out


def load_params(path: str | Path = "params.yaml", profile: str | None = None) -> Params:
    path = Path(path)
    if not path.is_file():
        raise EliteError(f"{path}: params file not found (run from the repository root or pass --params)")
    try:  # YAML 1.2, as DVC reads and writes it: `dvc exp run -S` writes "no" as a bare no, a string in 1.2
        raw = YAML(typ="safe", pure=True).load(path.read_text()) or {}
    except YAMLError as exc:
        raise EliteError(f"{path}: not valid YAML ({str(exc).strip().splitlines()[0]})") from None
    return parse_params(raw, str(path), profile)


def parse_params(raw: dict, source: str = "params.yaml", profile: str | None = None) -> Params:
    if not isinstance(raw, dict):
        raise EliteError(f"{source}: top level must be a mapping")
    profile = profile or raw.get("profile")
    if profile not in PROFILES:
        raise EliteError(f"{source}: profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    known = set(SECTIONS) | {"profile"}
    for key in raw:
        if key not in known:
            raise EliteError(f"{source}: unknown key {key}{closest(key, known)}")
    sections = {}
    for name, cls in SECTIONS.items():
        if name not in raw:
            raise EliteError(f"{source}: missing section {name}")
        sections[name] = build_section(cls, raw[name], name, profile, source)
    return Params(profile, sections, source)

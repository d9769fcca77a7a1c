"""Typed, strict sections of params.yaml.

Every section is a pydantic model that forbids unknown keys and has no defaults: params.yaml is the
one place where values live. A section may hold `smoke:` and `paper:` maps that override its keys for
that profile; only the selected profile's map is applied.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from elite.errors import EliteError

PROFILES = ("smoke", "toy", "paper")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def closest(name: str, options) -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(sorted(options))}"


def build_section(cls: type[Section], raw: Any, where: str, profile: str, source: str) -> Section:
    """Merge the profile override into `raw` and validate it as `cls`, with one-line errors."""
    if not isinstance(raw, dict):
        raise EliteError(f"{source}: {where} must be a mapping, got {type(raw).__name__}")
    values = {k: v for k, v in raw.items() if k not in PROFILES}
    for key in values:
        if key not in cls.model_fields:
            raise EliteError(f"{source}: unknown key {where}.{key}{closest(key, cls.model_fields)}")
    for prof in PROFILES:
        override = raw.get(prof) or {}
        if not isinstance(override, dict):
            raise EliteError(f"{source}: {where}.{prof} must be a mapping")
        for key in override:
            if key not in cls.model_fields:
                raise EliteError(f"{source}: unknown key {where}.{prof}.{key}{closest(key, cls.model_fields)}")
        if prof == profile:
            values.update(override)
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        key = f"{where}.{loc}" if loc else where
        if err["type"] == "extra_forbidden":
            raise EliteError(f"{source}: unknown key {key}{closest(str(err['loc'][0]), cls.model_fields)}") from None
        if err["type"] == "missing":
            raise EliteError(f"{source}: missing key {key} (every value lives in params.yaml; add it)") from None
        raise EliteError(f"{source}: {key}: {err['msg']} (got {err.get('input')!r})") from None

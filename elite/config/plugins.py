"""params.yaml section `plugins` (the plugins stage: the plug-in code each stage runs, elite/plugins.py)."""

from __future__ import annotations

from pydantic import Field

from elite.config.base import Section


class PluginsConfig(Section):
    out: str = Field(min_length=1)  # folder of <stage>.json, one per stage that runs a plug-in (deps in dvc.yaml)

"""The package's layers, read from the sources: the core (models, pipeline, config, loader) imports no stage and no
world; no stage imports a world (worlds plug in through entry points: elite/plugins.py); no import cycle between
packages. A world plug-in is found by its entry point; an unregistered name is no plug-in."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from elite.config import Params, load_params
from elite.plugins import DREAMBENCH, MODELS, RELEASES, names, plugin

ELITE = Path(__file__).resolve().parents[2] / "elite"
CORE = (
    "elite.models", "elite.pipeline", "elite.config", "elite.loader", "elite.pipelines", "elite.concepts",
    "elite.schedulers", "elite.images", "elite.pixels", "elite.placeholders", "elite.automask", "elite.concept_file",
    "elite.model_configs",
)  # fmt: skip
WORLDS = ("elite.toy",)
# the one known crossing: `--mask auto` runs the mask stage's own SAM rule (same settings as the stage), imported
# when asked for, with the pipeline extra installed (elite/automask.py says so in one line otherwise)
ALLOWED = {"elite.automask": {"elite.data.masking", "elite.data.paths", "elite.data.sam"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ELITE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module -> the elite modules it imports (anywhere in the file, function bodies too)."""
    found: dict[str, set[str]] = {}
    for path in ELITE.rglob("*.py"):
        names_ = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("elite"):
                names_.add(node.module)
            elif isinstance(node, ast.Import):
                names_ |= {a.name for a in node.names if a.name.startswith("elite")}
        found[module_name(path)] = names_
    return found


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_core_imports_no_stage_and_no_world():
    bad = {
        m: sorted(
            t
            for t in targets
            if not under(t, CORE) and t not in ("elite", "elite.errors", "elite.io") and t not in ALLOWED.get(m, ())
        )
        for m, targets in imports().items()
        if under(m, CORE)
    }
    assert not {m: t for m, t in bad.items() if t}, bad


def test_no_stage_imports_a_world():
    bad = {m: sorted(t for t in ts if under(t, WORLDS)) for m, ts in imports().items() if not under(m, WORLDS)}
    assert not {m: t for m, t in bad.items() if t}, bad


def test_no_cycle_between_packages():
    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges = {(package(m), package(t)) for m, ts in imports().items() for t in ts if package(m) != package(t)}
    cycles = sorted((a, b) for a, b in edges if (b, a) in edges and a < b)
    assert not cycles, cycles


def test_the_toy_world_plugs_in_through_entry_points():
    for group in (MODELS, RELEASES, DREAMBENCH):
        assert "toy" in names(group), group
        assert plugin(group, "toy", "x").__module__.startswith("elite.toy."), group
    assert plugin(RELEASES, "no-such-world", "download.source") is None


@pytest.fixture
def toy_params():
    """The toy profile's params with a 40-scene release (the stage writes 3,000)."""
    params = load_params(ELITE.parent / "params.yaml", "toy")
    sections = dict(params._sections, download=params.download.model_copy(update={"toy_images": 40}))
    return Params("toy", sections, params.source)


@pytest.mark.parametrize("group", [RELEASES, DREAMBENCH])
def test_toy_plugins_write_their_layouts(group, tmp_path, toy_params):
    out = plugin(group, "toy", "x")(toy_params, tmp_path / "out")
    assert out.is_dir() and any(out.rglob("*.jpg"))

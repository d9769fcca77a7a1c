"""The manual (docs/, mkdocs.yml) and the README: the site builds strictly, every command they show exists,
every file they link exists, and the architecture page names every package and module of elite/."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from elite.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]


def code_text(page: Path) -> str:
    """The page's code: fenced blocks and inline code spans (commands in prose are not claims)."""
    text = page.read_text()
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return "\n".join(fenced + re.findall(r"`([^`\n]+)`", rest))


def shown(pattern: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for page in PAGES:
        for match in re.finditer(pattern, code_text(page)):
            found.setdefault(match.group(1).strip(), set()).add(page.relative_to(REPO).as_posix())
    return found


def test_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: no broken link, no missing page, no unresolved API reference."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "loader" / "index.html").read_text()
    assert "load_elite" in api and "unload_elite" in api  # the API pages come from the docstrings


def test_every_elite_command_shown_answers_help():
    # `elite <command>` at the start of a command line (also .venv/bin/elite), not Python's `from elite import`
    commands = shown(r"(?:^|[\s/(]|\$ )(?<!from )(?<!import )elite((?: [a-z][a-z-]*){1,2})")
    assert {"generate", "demo", "evaluate"} <= {c.split()[0] for c in commands}  # the scan finds commands
    parser = build_parser()
    names = parser._subparsers._group_actions[0].choices  # the subcommands argparse knows
    for command, pages in sorted(commands.items()):
        words = command.split()
        sub = names.get(words[0])
        assert sub is not None, f"`elite {words[0]}` shown in {sorted(pages)} is not a command"
        nested = sub._subparsers._group_actions[0].choices if sub._subparsers else {}
        argv = words[:2] if len(words) > 1 and words[1] in nested else words[:1]
        help_out = io.StringIO()
        with contextlib.redirect_stdout(help_out), pytest.raises(SystemExit) as done:
            parser.parse_args([*argv, "--help"])
        assert done.value.code == 0 and "usage:" in help_out.getvalue(), f"elite {' '.join(argv)} --help"


def test_every_make_target_shown_exists():
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.M))
    shown_targets = shown(r"(?<![\w-])make ([a-z][a-z-]*)")
    assert {"run", "test", "docs"} <= set(shown_targets)
    missing = {t: sorted(p) for t, p in shown_targets.items() if t not in targets}
    assert not missing, f"make targets shown in the docs but not in the Makefile: {missing}"


def test_readme_links_resolve():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (REPO / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    assert "docs/index.md" in local
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
    assert len((REPO / "README.md").read_text().splitlines()) <= 250  # a landing page, not the manual


def test_architecture_page_matches_the_code():
    page = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    elite = REPO / "elite"
    packages = sorted(p.name for p in elite.iterdir() if (p / "__init__.py").is_file())
    modules = sorted(p.name for p in elite.glob("*.py") if p.name != "__init__.py")
    assert {
        "data",
        "train",
        "evaluate",
        "registry",
        "baselines",
        "demo",
        "models",
        "config",
        "commands",
        "toy",
    } <= set(packages)
    unnamed = [f"{p}/" for p in packages if f"{p}/" not in page] + [m for m in modules if m not in page]
    assert not unnamed, f"docs/ARCHITECTURE.md does not name: {unnamed}"
    for package in packages:  # every module of a package is named in its block
        for module in sorted((elite / package).glob("*.py")):
            if module.name != "__init__.py":
                assert module.stem in page, f"docs/ARCHITECTURE.md does not name elite/{package}/{module.name}"


def test_every_path_the_docs_name_exists():
    missing = []
    for page in PAGES:
        # files (with a suffix) and folders (a trailing /); tests/artifacts/ is what tests write (git-ignored)
        for path in set(re.findall(r"`((?:elite|flows|tests|bench)/[\w./-]*(?:\.\w+|/))`", page.read_text())):
            if not path.startswith("tests/artifacts/") and not (REPO / path.rstrip("/")).exists():
                missing.append(f"{page.relative_to(REPO)}: {path}")
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)

"""A flow run as a DVC experiment: what the run changed (params, dvc.lock, metrics) is saved with
`dvc exp save` under a name, then the workspace goes back to what it was before the run.

So a Prefect run on a shared checkout (a GPU node's worker) can be listed, compared and applied like any
`dvc exp run` (`dvc exp show`, `make compare`, `dvc exp apply <name>`), and the checkout's own dvc.lock,
params.yaml and outputs are left as they were (outputs come back from DVC's cache with `dvc checkout`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from elite.commands.experiments import run_dvc
from elite.errors import EliteError, last_line
from elite.io import write_text
from flows.stages import load_stages

Log = Callable[[str], None]
EDITED = ("params.yaml", "dvc.lock")  # what the flow itself edits (profile, processes) or DVC rewrites


def uncached_outputs(repo: Path) -> list[str]:
    """dvc.yaml's outputs kept in git (`cache: false`: the metrics and plots files), which `dvc checkout`
    does not restore."""
    return [path for stage in load_stages(repo) for path in stage.uncached]


def experiment_name(flow_run_name: str) -> str:
    """`prefect-<flow run name>` with what git refuses in a ref name replaced (DVC names are git refs)."""
    return "prefect-" + re.sub(r"[^A-Za-z0-9_-]+", "-", flow_run_name).strip("-")


@dataclass(frozen=True)
class Snapshot:
    """The workspace files a run may change, as they were before it (None: the file did not exist)."""

    repo: Path
    texts: dict[str, str | None]

    @classmethod
    def take(cls, repo: Path) -> Snapshot:
        return cls(repo, {name: _read(repo / name) for name in (*EDITED, *uncached_outputs(repo))})

    def restore(self, env: dict[str, str], log: Log) -> None:
        """Put the files back, then the cached outputs dvc.lock names (`dvc checkout` from the cache)."""
        for name, text in self.texts.items():
            path = self.repo / name
            if text is None:
                path.unlink(missing_ok=True)
            elif _read(path) != text:
                write_text(path, text)
        proc = run_dvc(["checkout", "--force", "--quiet"], self.repo, env)
        if proc.returncode != 0:  # an output of the old dvc.lock that is not in the cache: say which, go on
            log(f"dvc checkout after the experiment: {last_line(proc)} (run `dvc checkout` or `dvc repro`)")
        log("workspace restored to its state before the run (params.yaml, dvc.lock, outputs)")


def save(repo: Path, name: str, env: dict[str, str], log: Log) -> None:
    """`dvc exp save -n name -f`: the workspace as the experiment `name` (replaced if it exists)."""
    proc = run_dvc(["exp", "save", "--name", name, "--force"], repo, env)
    if proc.returncode != 0:
        raise EliteError(f"dvc exp save --name {name}: {last_line(proc)}")
    log(f"DVC experiment {name} saved (dvc exp show; dvc exp apply {name})")


def set_processes(repo: Path, profile: str, processes: int, log: Log) -> None:
    """`launch.<profile>.processes: N` in params.yaml, the edit `dvc exp run -S launch.<profile>.processes=N`
    makes, done on the text so that every comment and layout stays."""
    if processes < 1:
        raise EliteError(f"flow parameter processes must be >= 1, got {processes}")
    path = repo / "params.yaml"
    text = path.read_text()
    block = re.search(r"^launch:[^\n]*\n((?:[ \t]+[^\n]*\n|[ \t]*\n)*)", text, re.MULTILINE)
    if block is None:
        raise EliteError(f"{path}: no top-level `launch:` section; add `launch: {{processes: 1}}`")
    body = block.group(1)
    sub = re.search(rf"^  {profile}:[^\n]*\n((?:    [^\n]*\n)*)", body, re.MULTILINE)
    line = re.search(r"^    processes:[ \t]*(\d+)", sub.group(1), re.MULTILINE) if sub else None
    if line is not None and int(line.group(1)) == processes:
        return
    if line is not None:
        at = block.start(1) + sub.start(1) + line.start(1)
        text = text[:at] + str(processes) + text[at + len(line.group(1)) :]
    elif sub is not None:
        at = block.start(1) + sub.start(1)
        text = text[:at] + f"    processes: {processes}\n" + text[at:]
    else:
        text = text[: block.start(1)] + f"  {profile}:\n    processes: {processes}\n" + text[block.start(1) :]
    write_text(path, text)
    log(f"params.yaml: launch.{profile}.processes = {processes}")


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None

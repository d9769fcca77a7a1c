"""The DVC side of the Prefect flow, free of Prefect: read dvc.yaml, run `dvc` and stage commands with
their output streamed line by line, lock the checkout, prepare sharded stages, collect metrics.

DVC decides what is up to date: a stage runs as `dvc repro --single-item <stage>`. A sharded stage
runs its shards (`<cmd> --shard i/n`, possibly on other machines sharing the checkout) straight into
its outputs, then the flow runs `<cmd>` once more (it skips the finished items and writes the
manifest/metrics) and records the result with `dvc commit`, exactly what `dvc repro` would have done
minus deleting the shards' work. Before the shards start, stale outputs are deleted as `dvc repro`
would delete them, unless a marker shows they are the partial work of an interrupted run with the
same code, data and params (then the shards resume).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from elite.commands.experiments import run_dvc
from elite.errors import EliteError
from elite.io import write_text

Log = Callable[[str], None]

SHARDABLE = ("mask", "evaluate")  # stages whose command takes --shard i/n
STATE_DIR = Path(".dvc") / "tmp" / "elite-flow"  # ignored by .dvc/.gitignore
PROGRESS_EVERY_S = 5.0  # progress bars (lines ended by \r) reach the log at most this often


class CommandFailed(EliteError):
    """A `dvc` or stage command exited with an error; the message carries its last lines."""


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    deps: tuple[str, ...]
    params: tuple[str, ...]
    outs: tuple[str, ...]  # every output path: outs, metrics and plots
    metrics: tuple[str, ...] = field(default=())
    persist: tuple[str, ...] = field(default=())  # outputs marked `persist: true` (the command keeps what is valid)
    uncached: tuple[str, ...] = field(default=())  # outputs marked `cache: false` (kept in git: metrics, plots)


def _paths(entries: list | None, option: str | None = None, value: bool = True) -> list[str]:
    """dvc.yaml out lists hold plain paths or {path: {options}} maps; with `option`, only the paths
    where that option is set to `value`."""
    paths = []
    for entry in entries or []:
        for path, opts in entry.items() if isinstance(entry, dict) else [(entry, None)]:
            if option is None or (opts or {}).get(option) is value:
                paths.append(str(path))
    return paths


def load_stages(repo: Path) -> list[Stage]:
    """The stages of dvc.yaml in file order (the order they run in)."""
    path = Path(repo) / "dvc.yaml"
    if not path.is_file():
        raise EliteError(f"{path}: not found (the flow runs in the repository root that holds dvc.yaml)")
    stages = []
    for name, spec in (yaml.safe_load(path.read_text()) or {}).get("stages", {}).items():
        if not isinstance(spec.get("cmd"), str):
            raise EliteError(f"{path}: stages.{name}.cmd must be one command string")
        metrics = _paths(spec.get("metrics"))
        outs = _paths(spec.get("outs")) + metrics + _paths(spec.get("plots"))
        params = [p for entry in spec.get("params", []) for p in ([entry] if isinstance(entry, str) else entry)]
        kinds = ("outs", "metrics", "plots")
        persist = [p for kind in kinds for p in _paths(spec.get(kind), "persist")]
        uncached = [p for kind in kinds for p in _paths(spec.get(kind), "cache", False)]
        stages.append(
            Stage(
                name,
                spec["cmd"],
                tuple(spec.get("deps", [])),
                tuple(params),
                tuple(outs),
                tuple(metrics),
                tuple(persist),
                tuple(uncached),
            )
        )
    return stages


def select(stages: list[Stage], names: list[str] | None) -> list[Stage]:
    if not names:
        return stages
    known = {s.name for s in stages}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise EliteError(f"dvc.yaml: no stage {', '.join(unknown)}; stages: {', '.join(s.name for s in stages)}")
    return [s for s in stages if s.name in names]


def shardable(names: list[str] | None) -> tuple[str, ...]:
    """The stages to shard: `names` (all of SHARDABLE when None), each one of SHARDABLE."""
    if names is None:
        return SHARDABLE
    wrong = [n for n in names if n not in SHARDABLE]
    if wrong:
        raise EliteError(f"shard_stages: {', '.join(wrong)} cannot be sharded; choose from {', '.join(SHARDABLE)}")
    return tuple(names)


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for `dvc` and stage commands: this interpreter's bin folder first on PATH (so
    `elite` and `dvc` resolve to this virtualenv), unbuffered Python output, plus `extra`."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


_BREAK = re.compile(rb"\r\n|\n|\r")


def run_logged(cmd: list[str] | str, cwd: Path, env: dict[str, str], log: Log, what: str | None = None) -> None:
    """Run `cmd` (a list, or a shell string as DVC runs stage commands) and pass every output line to
    `log` as it comes; progress-bar redraws (\\r) at most every PROGRESS_EVERY_S seconds.
    A non-zero exit raises CommandFailed with the last lines of output."""
    what = what or (cmd if isinstance(cmd, str) else " ".join(cmd))
    tail: deque[str] = deque(maxlen=25)

    def emit(raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if line.strip():
            tail.append(line)
            log(line)

    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        shell=isinstance(cmd, str),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    pending, bar, last_bar = b"", b"", 0.0
    try:
        while chunk := proc.stdout.read1(65536):
            pending += chunk
            start = 0
            for m in _BREAK.finditer(pending):
                if m.group() == b"\r" and m.end() == len(pending):
                    break  # maybe the first half of \r\n: wait for the next chunk
                text = pending[start : m.start()]
                start = m.end()
                if m.group() != b"\r":
                    bar = b""  # a pending redraw is overwritten by this line, as on a terminal
                    emit(text)
                elif text.strip():  # a progress-bar redraw
                    bar = text
                    if time.monotonic() - last_bar >= PROGRESS_EVERY_S:
                        emit(bar)
                        bar, last_bar = b"", time.monotonic()
            pending = pending[start:]
        emit(pending if pending.strip() else bar)
        rc = proc.wait()
    except BaseException:  # cancelled, timed out, interrupted: stop dvc and the stage command it started
        _terminate_tree(proc.pid)
        proc.wait()
        raise
    if rc != 0:
        last = "\n".join(tail)
        raise CommandFailed(f"{what} exited with code {rc}; last output:\n{last}")


def _terminate_tree(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM a process and all its descendants, SIGKILL what is left after `grace_s` seconds."""
    import psutil  # a dependency of dvc, accelerate and distributed

    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with suppress(psutil.NoSuchProcess):
            proc.kill()


def dvc(repo: Path, args: list[str], env: dict[str, str], log: Log) -> None:
    run_logged([sys.executable, "-m", "dvc", *args], repo, env, log, what=f"dvc {' '.join(args)}")


def dvc_status(repo: Path, stage: str, env: dict[str, str]) -> dict:
    """`dvc status <stage> --json`: {} when the stage is up to date, else what changed."""
    proc = run_dvc(["status", stage, "--json"], repo, env)
    if proc.returncode != 0:
        raise CommandFailed(f"dvc status {stage} exited with code {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout or "{}")


# --- the checkout ---------------------------------------------------------------------------------


@contextmanager
def checkout_lock(repo: Path, log: Log) -> Iterator[None]:
    """One flow run per checkout at a time (DVC allows one writer; the profile is a workspace edit)."""
    path = Path(repo) / STATE_DIR / "flow.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another flow run holds {path}; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_PROFILE_LINE = re.compile(r"^(profile:[ \t]*)([^\s#]+)", re.MULTILINE)


def apply_profile(repo: Path, profile: str | None, log: Log) -> str:
    """Set params.yaml's `profile` (the edit `dvc exp run -S profile=...` makes); returns the profile in effect."""
    from elite.config.base import PROFILES

    path = Path(repo) / "params.yaml"
    text = path.read_text()
    match = _PROFILE_LINE.search(text)
    if match is None:
        raise EliteError(f"{path}: no top-level `profile:` line; add `profile: smoke`")
    current = match.group(2)
    if profile is None or profile == current:
        return current
    if profile not in PROFILES:
        raise EliteError(f"flow parameter profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    write_text(path, text[: match.start(2)] + profile + text[match.end(2) :])
    log(f"params.yaml: profile {current} -> {profile}")
    return profile


# --- sharded stages -------------------------------------------------------------------------------


def _overlaps(a: str, b: str) -> bool:
    a, b = a.rstrip("/"), b.rstrip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _content_digest(path: Path) -> str:
    """sha256 over a file, or over the relative names and contents of a folder's files (no caches)."""
    digest = hashlib.sha256()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    else:
        return "missing"
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def fingerprint(repo: Path, stage: Stage) -> str:
    """What the stage's result depends on: its definition, its params' values, and its deps (by the
    dvc.lock hashes of upstream outputs where there are some, else by content)."""
    repo = Path(repo)
    lock_file = repo / "dvc.lock"
    lock = (yaml.safe_load(lock_file.read_text()) or {}) if lock_file.is_file() else {}
    upstream = {
        out["path"]: out.get("md5")
        for name, entry in lock.get("stages", {}).items()
        if name != stage.name
        for out in entry.get("outs", [])
    }
    params = yaml.safe_load((repo / "params.yaml").read_text()) or {}
    record: dict = {
        "cmd": stage.cmd,
        "outs": stage.outs,
        "params": {k: params.get(k) for k in stage.params},
        "deps": {},
    }
    for dep in stage.deps:
        linked = sorted((p, md5) for p, md5 in upstream.items() if _overlaps(p, dep))
        record["deps"][dep] = linked or _content_digest(repo / dep)
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def _marker(repo: Path, stage: Stage) -> Path:
    return Path(repo) / STATE_DIR / f"{stage.name}.shards.json"


def prepare_shards(repo: Path, stage: Stage, env: dict[str, str], log: Log) -> bool:
    """Whether the stage's shards must run. When they must, its outputs are cleared first (as `dvc
    repro` clears them; `persist: true` outputs are kept, as `dvc repro` keeps them) unless they hold
    the partial work of an interrupted run with the same fingerprint, which the shards then resume."""
    status = dvc_status(repo, stage.name, env)
    if not status:
        return False
    log(f"{stage.name} is stale: {json.dumps(status.get(stage.name, status))}")
    marker = _marker(repo, stage)
    current = fingerprint(repo, stage)
    previous = json.loads(marker.read_text()).get("fingerprint") if marker.is_file() else None
    if previous == current:
        log(f"{stage.name}: resuming the partial outputs of an interrupted run (same code, data and params)")
        return True
    for out in stage.outs:
        if out in stage.persist:  # kept, as `dvc repro` keeps it: the command redoes what is stale
            continue
        path = Path(repo) / out
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": current}) + "\n")
    log(f"{stage.name}: outputs cleared for a fresh sharded run")
    return True


def shard_command(stage: Stage, index: int, count: int) -> str:
    return f"{stage.cmd} --shard {index}/{count}"


def finish_sharded(repo: Path, stage: Stage, env: dict[str, str], log: Log) -> None:
    """After the shards: the stage's own command (skips finished items, writes manifest + metrics),
    then `dvc commit` records deps, params and outputs in dvc.lock as `dvc repro` would."""
    run_logged(stage.cmd, Path(repo), env, log)
    dvc(Path(repo), ["commit", "--force", stage.name], env, log)
    left = dvc_status(Path(repo), stage.name, env)
    if left:
        raise CommandFailed(f"{stage.name}: still stale after dvc commit: {json.dumps(left)}")
    _marker(repo, stage).unlink(missing_ok=True)


# --- metrics --------------------------------------------------------------------------------------


def _flatten(value, prefix: str = "") -> Iterator[tuple[str, object]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (int, float, str, bool)) or value is None:
        yield prefix, value


def read_metrics(repo: Path, stages: list[Stage]) -> dict[str, dict[str, object]]:
    """metrics file -> {dotted key: scalar} for the metrics files of `stages` that exist."""
    found = {}
    for stage in stages:
        for rel in stage.metrics:
            path = Path(repo) / rel
            if path.is_file():
                data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
                found[rel] = dict(_flatten(data))
    return found


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def metrics_markdown(title: str, results: list[dict], metrics: dict[str, dict[str, object]]) -> str:
    lines = [f"# {title}", "", "| stage | result | seconds |", "|---|---|---:|"]
    lines += [f"| {r['stage']} | {r['result']} | {r['seconds']:.1f} |" for r in results]
    for rel, values in metrics.items():
        lines += ["", f"## {rel}", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {key} | {_cell(value)} |" for key, value in values.items()]
    if not metrics:
        lines += ["", "No metrics files yet."]
    return "\n".join(lines) + "\n"


def numeric_metrics(metrics: dict[str, dict[str, object]]) -> dict[str, float]:
    """Flat numeric metrics for MLflow, keyed `<file stem>/<dotted key>`."""
    out = {}
    for rel, values in metrics.items():
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[re.sub(r"[^A-Za-z0-9_\-./ ]", "_", f"{Path(rel).stem}/{key}")] = float(value)
    return out

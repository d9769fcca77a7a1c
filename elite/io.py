"""Crash-safe file output: everything is written to a temporary sibling and renamed into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(target: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `target`; it is renamed onto `target` if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(target: Path, data: object) -> None:
    with atomic_file(Path(target)) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text(target: Path, text: str) -> None:
    """`text` into `target` through a temporary sibling and a rename (a reader never sees half a file)."""
    with atomic_file(Path(target)) as tmp:
        tmp.write_text(text)


def read_json(path: str | Path, expect: type, what: str, fix: str) -> object:
    """A JSON file's content of type `expect`; otherwise one EliteError naming the file, ending with `fix`."""
    from elite.errors import EliteError

    path = Path(path)
    if not path.is_file():
        raise EliteError(f"{path}: {what} not found; {fix}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EliteError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); {fix}") from None
    if not isinstance(data, expect):
        kind = {dict: "object", list: "list"}.get(expect, expect.__name__)
        raise EliteError(f"{path}: expected a JSON {kind} ({what}), got {type(data).__name__}; {fix}")
    return data


def inside(path: str | Path, *roots: str | Path) -> bool:
    """Whether `path` lies within one of `roots` (relative paths from the working directory; `..` is
    resolved lexically, so a manifest row or archive member cannot climb out with it)."""
    target = os.path.abspath(path)
    for root in roots:
        base = os.path.abspath(root)
        if target == base or target.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


def fetch_url(url: str, dest: Path, retries: int, wait: float, hint: str) -> str:
    """Download `url` to `dest` (a temporary sibling renamed into place when complete); returns its SHA-256.

    Connection errors, timeouts, HTTP 408/429/5xx and bodies shorter than their Content-Length are retried,
    `retries` tries in all with a wait of `wait` seconds doubling each time; other HTTP errors are final.
    Failing ends in a one-line EliteError naming the URL and the last reason, followed by `hint`."""
    import hashlib
    import http.client
    import logging
    import time
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    from elite.errors import EliteError

    for attempt in range(1, retries + 1):
        try:
            digest = hashlib.sha256()
            with (
                atomic_file(Path(dest)) as tmp,
                urllib.request.urlopen(url, timeout=60) as resp,
                open(tmp, "wb") as out,
            ):
                total = int(resp.headers.get("Content-Length") or 0) or None
                got = 0
                with tqdm(
                    total=total, unit="B", unit_scale=True, desc=f"download {Path(dest).name}", leave=False
                ) as bar:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
                if total is not None and got != total:
                    raise ConnectionError(f"connection closed after {got} of {total} bytes")
            return digest.hexdigest()
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            code = getattr(exc, "code", None)
            final = (isinstance(exc, urllib.error.HTTPError) and code not in (408, 429) and code < 500) or (
                isinstance(exc, ValueError)
            )  # e.g. not a URL
            reason = f"HTTP {code}" if isinstance(exc, urllib.error.HTTPError) else str(getattr(exc, "reason", exc))
            if final or attempt == retries:
                tries = f" after {attempt} tries" if attempt > 1 else ""
                raise EliteError(f"cannot download {url}{tries} ({reason}); {hint}") from None
            pause = wait * 2 ** (attempt - 1)
            logging.getLogger("elite.io").warning(
                "download of %s failed (%s); retry %d of %d in %.1f s", url, reason, attempt, retries - 1, pause
            )
            time.sleep(pause)
    raise EliteError(f"cannot download {url}: retries must be >= 1; {hint}")


def save_state(obj: object, target: Path) -> None:
    """Save a nested state (dicts with any keys, lists, tuples, tensors, numbers, strings, None) as one safetensors
    file, atomically: the tensors as its tensors, the structure as JSON in its metadata. No pickle anywhere, so
    loading it back cannot run code (optimizer/scheduler state dicts, RNG states)."""
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}

    def encode(value):
        if isinstance(value, torch.Tensor):
            tensors[key := str(len(tensors))] = value.detach().contiguous().cpu()
            return {"tensor": key}
        if isinstance(value, dict):
            return {"dict": [[encode(k), encode(v)] for k, v in value.items()]}
        if isinstance(value, (list, tuple)):
            return {type(value).__name__: [encode(v) for v in value]}
        if value is None or isinstance(value, (bool, int, float, str)):
            return {"value": value}
        raise TypeError(f"{target}: cannot store a {type(value).__name__} in a state file")

    tree = json.dumps(encode(obj))
    with atomic_file(Path(target)) as tmp:
        save_file(tensors, str(tmp), metadata={"elite_state": tree})


def load_state(path: Path) -> object:
    """What `save_state` wrote; ValueError for a file that is not one."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            tree = json.loads((f.metadata() or {})["elite_state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, KeyError) as exc:
        raise ValueError(f"{path}: not a state file ({exc})") from None

    def decode(node):
        kind, value = next(iter(node.items()))
        if kind == "tensor":
            return tensors[value]
        if kind == "dict":
            return {decode(k): decode(v) for k, v in value}
        if kind in ("list", "tuple"):
            items = [decode(v) for v in value]
            return tuple(items) if kind == "tuple" else items
        return value

    return decode(tree)


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it; None (nothing to draw) writes nothing."""
    if fig is None:
        return
    import matplotlib.pyplot as plt

    with atomic_file(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)

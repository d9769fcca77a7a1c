"""Checkpoints: `<checkpoint_dir>/step-NNNNNNN/` with

    elite/            the ELITE weights at that step (elite.safetensors + elite_config.json; usable as --weights)
    optimizer.safetensors   AdamW state         scheduler.safetensors   LR scheduler state
    rng.safetensors         python/numpy/torch(/cuda) RNG states of every process, in process order
                            (elite.io.save_state: tensors + a JSON skeleton, no pickle)
    history.csv       the per-step log up to that step (the plot CSV of a resumed run stays whole)
    state.json        step, stage, fingerprint of what determines the result, MLflow run id, ...

Written by the main process only (the RNG states of the others are gathered to it first), into a
temporary folder renamed into place, so a killed run leaves either a whole checkpoint or none. A run
resumes from the newest checkpoint whose fingerprint matches its own (same params apart from
bookkeeping keys, same manifest, same starting weights, same training code) and whose step is within
max_steps; the others are ignored, and removed when this run writes its first checkpoint.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import gather_object
from safetensors.torch import load_file

from elite.errors import EliteError
from elite.io import atomic_dir, load_state, save_state
from elite.models.elite_model import WEIGHTS_NAME

STEP_DIR = re.compile(r"^step-(\d+)$")
FIELDS = ("step", "loss", "loss_ldm", "loss_reg", "lr", "grad_norm", "images_per_second")
# keys that do not change what is trained (where/how often to write, how to sample, how long to run)
BOOKKEEPING = {
    "out",
    "metrics",
    "plot",
    "checkpoint_dir",
    "checkpoint_every",
    "keep_checkpoints",
    "max_steps",
    "num_workers",
    "cpu_threads",
    "cache_latents",
    "cache_dir",
    "sample_every",
    "sample_prompt",
    "sample_steps",
    "sample_guidance",
    "sample_lam",
    "sample_subjects",
    "sample_masks",
    "sample_count",
}


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def code_digest() -> str:
    """The training code (elite/train, elite/models, elite/images.py): a checkpoint of other code is not resumed."""
    import elite

    root = Path(elite.__file__).parent
    files = sorted([*(root / "train").glob("*.py"), *(root / "models").glob("*.py"), root / "images.py"])
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def fingerprint(stage: str, cfg, init_dir: Path) -> str:
    """What the trained weights depend on: the section minus bookkeeping keys, the manifest, the init
    weights and the training code."""
    values = {k: v for k, v in cfg.model_dump().items() if k not in BOOKKEEPING}
    parts = [stage, values, file_digest(Path(cfg.manifest)), file_digest(Path(init_dir) / WEIGHTS_NAME), code_digest()]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def checkpoints(directory: Path) -> list[Checkpoint]:
    """Complete checkpoints in `directory`, oldest first."""
    found = []
    if not Path(directory).is_dir():
        return found
    for child in Path(directory).iterdir():
        m = STEP_DIR.match(child.name)
        if m and (child / "state.json").is_file():
            try:
                found.append(Checkpoint(child, int(m.group(1)), json.loads((child / "state.json").read_text())))
            except (json.JSONDecodeError, OSError):
                continue
    return sorted(found, key=lambda c: c.step)


def find_resumable(directory: Path, fp: str, max_steps: int) -> Checkpoint | None:
    for ckpt in reversed(checkpoints(directory)):
        if ckpt.state.get("fingerprint") == fp and ckpt.step <= max_steps:
            return ckpt
    return None


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_history(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in FIELDS})


def read_history(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in row.items()} for row in csv.DictReader(fh)]


def save_checkpoint(
    accelerator,
    directory: Path,
    step: int,
    save_weights,
    optimizer,
    scheduler,
    history: list[dict],
    state: dict,
    keep: int,
) -> Path:
    """Collective (every process must call it); the main process writes. Returns the checkpoint's path."""
    rngs = gather_object([rng_state()])
    target = Path(directory) / f"step-{step:07d}"
    if not accelerator.is_main_process:
        return target
    with atomic_dir(target) as tmp:
        save_weights(tmp / "elite")
        save_state(optimizer.state_dict(), tmp / "optimizer.safetensors")
        save_state(scheduler.state_dict(), tmp / "scheduler.safetensors")
        save_state(rngs, tmp / "rng.safetensors")
        write_history(history, tmp / "history.csv")
        (tmp / "state.json").write_text(
            json.dumps({**state, "step": step, "num_processes": len(rngs)}, indent=2) + "\n"
        )
    ours = [c for c in checkpoints(directory) if c.state.get("fingerprint") == state["fingerprint"]]
    stale = [c for c in checkpoints(directory) if c.state.get("fingerprint") != state["fingerprint"]]
    for old in stale + ours[:-keep]:  # other params/data/code: never resumable by this run
        shutil.rmtree(old.path, ignore_errors=True)
    return target


def load_checkpoint(ckpt: Checkpoint, elite, optimizer, scheduler, accelerator) -> list[dict]:
    """Restore weights, optimiser, scheduler and this process's RNG state; returns the history."""
    try:
        elite.load_state_dict(load_file(ckpt.path / "elite" / WEIGHTS_NAME), strict=True)
        optimizer.load_state_dict(load_state(ckpt.path / "optimizer.safetensors"))
        scheduler.load_state_dict(load_state(ckpt.path / "scheduler.safetensors"))
        rngs = load_state(ckpt.path / "rng.safetensors")
        history = read_history(ckpt.path / "history.csv")
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EliteError(
            f"{ckpt.path}: cannot resume from this checkpoint ({first}); delete it to start over"
        ) from None
    if len(rngs) == accelerator.num_processes:
        set_rng_state(rngs[accelerator.process_index])
    return history


def clean_partial(directory: Path) -> None:
    """Remove temporary folders of checkpoints that a killed run left half-written."""
    if Path(directory).is_dir():
        for child in Path(directory).iterdir():
            if child.name.startswith(".step-") and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)

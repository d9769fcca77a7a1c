"""Where the data stages read and write, relative to the repository root (the stage contract in
docs/ARCHITECTURE.md). Every stage runs from the repository root, as `dvc repro` does."""

from __future__ import annotations

from pathlib import Path

OPENIMAGES = Path("data/openimages")  # download: FiftyOne's Open Images split layout under <split>/
CURATED = Path("data/curated")  # curate: global.jsonl, local.jsonl
MASKS = Path("data/masks")  # mask: sam/ PNGs, local.jsonl, dreambench/<subject>.png, shards/
DREAMBENCH_SUBJECTS = Path("data/dreambench/subjects.json")  # written by the dreambench stage
SAM_DIR = Path("models/pretrained/sam")  # prepare_models: sam_config.json + the checkpoint
METRICS = Path("metrics")


def metrics_file(stage: str) -> Path:
    return METRICS / f"{stage}.json"


def concept_mask_name(subject: str, image: str | Path, first: bool) -> str:
    """File name of a DreamBench mask in data/masks/dreambench/: `<subject>.png` for the concept image,
    `<subject>.<image stem>.png` for the other images of the subject (several-image evaluation)."""
    return f"{subject}.png" if first else f"{subject}.{Path(image).stem}.png"


def rel(path: str | Path) -> str:
    """`path` relative to the working directory (the repository root) when inside it, else absolute."""
    path = Path(path).absolute()
    try:
        return path.relative_to(Path.cwd().absolute()).as_posix()
    except ValueError:
        return path.as_posix()

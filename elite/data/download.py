"""The download stage: an Open Images split into `data/openimages/` and a persistent FiftyOne dataset.

`download.source` picks where the split comes from; all three go through the same parser and
writer (`elite.data.openimages`) and the same FiftyOne import:

* a world plug-in's name (entry-point group `elite.releases`, elite/plugins.py), e.g. `toy`: the toy world's
  scenes without the held-out identities, written in the release layout and imported the same way;
* `synthetic` (smoke): the stage first writes a generated split in the official release layout to
  `data/openimages/release/`, then imports it exactly like a pre-downloaded copy;
* `zoo` (paper): FiftyOne's zoo downloads `open-images-v7` (boxes + segmentations) into
  `download.zoo_dir`, resumable, with retries;
* a folder: a local copy in the official release layout (or FiftyOne's split layout).

`data/openimages/` is written atomically: `<split>/` in FiftyOne's Open Images layout with the rows
that passed the checks (images and masks hard-linked where the filesystem allows), and
`release.json` (stamp, split, dataset name, counts), which lets `curate` find the dataset and
notice when it belongs to another download. The stamp is a digest of what was written (the tables whole, the
images and masks by name and size), so the same release gives the same `data/openimages` hash on every run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from elite.data import paths
from elite.data.fiftyone_db import import_split, zoo_download
from elite.data.openimages import find_release, import_release
from elite.data.synth import write_synthetic_release
from elite.errors import EliteError
from elite.io import atomic_dir, write_json
from elite.plugins import RELEASES, plugin
from elite.tracking import scoped_dataset


def split_digest(split_dir: Path) -> str:
    """SHA-256 of a split folder: every CSV/JSON table's bytes, every other file's relative path and size."""
    digest = hashlib.sha256()
    for path in sorted(p for p in split_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(split_dir).as_posix()
        digest.update(f"{rel}\0{path.stat().st_size}\0".encode())
        if path.suffix in (".csv", ".json"):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


BUILTIN = ("synthetic", "zoo")


def run_download(cfg, params=None) -> dict:
    """`params`: the whole params, handed to a world plug-in's release (download.source names one)."""
    out = paths.OPENIMAGES
    release_plugin = plugin(RELEASES, cfg.source, "download.source") if cfg.source not in BUILTIN else None
    if cfg.source not in BUILTIN and release_plugin is None:
        src = Path(cfg.source).expanduser().absolute()
        if src == out.absolute() or out.absolute() in src.parents:
            raise EliteError(
                f"download.source: {cfg.source} is inside {out}, which this stage replaces; keep the copy elsewhere"
            )
    with atomic_dir(out) as tmp:
        if cfg.source == "synthetic":
            src = write_synthetic_release(
                tmp / "release",
                cfg.split,
                cfg.synthetic_images,
                cfg.synthetic_size,
                cfg.synthetic_objects,
                cfg.synthetic_mask_fraction,
                cfg.seed,
            )
        elif release_plugin is not None:
            src = release_plugin(params, tmp / "release")
        elif cfg.source == "zoo":
            src = zoo_download(cfg.split, cfg.zoo_dir, cfg.max_samples, cfg.workers, cfg.retries, cfg.retry_wait)
        release = find_release(src, cfg.split)
        report = import_release(release, tmp / cfg.split, cfg.workers, cfg.mask_aspect_tolerance)
        if report.images == 0:
            raise EliteError(f"download.source: no <ImageID>.jpg images in {release.images_dir}")
        counts = report.as_dict()
        stamp = split_digest(tmp / cfg.split)
        write_json(
            tmp / "release.json",
            {
                "stamp": stamp,
                "split": cfg.split,
                "dataset": cfg.dataset,
                "source": cfg.source,
                "layout": release.layout,
                **counts,
            },
        )
    dataset = import_split(out / cfg.split, scoped_dataset(cfg.dataset), stamp)
    metrics = {
        **counts,
        "source": cfg.source,
        "dataset": cfg.dataset,
        "fiftyone_samples": len(dataset),
        "fiftyone_boxes": dataset.count("detections.detections"),
        "fiftyone_masks": dataset.count("segmentations.detections"),
    }
    write_json(paths.metrics_file("download"), metrics)
    return metrics

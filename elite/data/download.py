"""The download stage: an Open Images split into `data/openimages/` and a persistent FiftyOne dataset.

`download.source` picks where the split comes from; all three go through the same parser and
writer (`elite.data.openimages`) and the same FiftyOne import:

* `toy` (toy): the toy world's scenes without the held-out identities (elite/toy/release.py), written in
  the release layout and imported the same way;
* `synthetic` (smoke): the stage first writes a generated split in the official release layout to
  `data/openimages/release/`, then imports it exactly like a pre-downloaded copy;
* `zoo` (paper): FiftyOne's zoo downloads `open-images-v7` (boxes + segmentations) into
  `download.zoo_dir`, resumable, with retries;
* a folder: a local copy in the official release layout (or FiftyOne's split layout).

`data/openimages/` is written atomically: `<split>/` in FiftyOne's Open Images layout with the rows
that passed the checks (images and masks hard-linked where the filesystem allows), and
`release.json` (stamp, split, dataset name, counts), which lets `curate` find the dataset and
notice when it belongs to another download.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from elite.data import paths
from elite.data.fiftyone_db import import_split, zoo_download
from elite.data.openimages import find_release, import_release
from elite.data.synth import write_synthetic_release
from elite.errors import EliteError
from elite.io import atomic_dir, write_json
from elite.tracking import scoped_dataset


def run_download(cfg, toy=None) -> dict:
    """`toy`: the params' `toy` section, read when download.source is toy."""
    out = paths.OPENIMAGES
    if cfg.source not in ("synthetic", "zoo", "toy"):
        src = Path(cfg.source).expanduser().absolute()
        if src == out.absolute() or out.absolute() in src.parents:
            raise EliteError(f"download.source: {cfg.source} is inside {out}, which this stage replaces; keep the copy elsewhere")
    stamp = uuid.uuid4().hex
    with atomic_dir(out) as tmp:
        if cfg.source == "synthetic":
            src = write_synthetic_release(tmp / "release", cfg.split, cfg.synthetic_images, cfg.synthetic_size,
                                          cfg.synthetic_objects, cfg.synthetic_mask_fraction, cfg.seed)
        elif cfg.source == "toy":
            from elite.toy.release import write_toy_release

            held = frozenset((c, p) for c, p in toy.held_out)
            src = write_toy_release(tmp / "release", cfg.split, cfg.toy_images, toy.size, cfg.seed, held,
                                    cfg.synthetic_mask_fraction)
        elif cfg.source == "zoo":
            src = zoo_download(cfg.split, cfg.zoo_dir, cfg.max_samples, cfg.workers, cfg.retries, cfg.retry_wait)
        release = find_release(src, cfg.split)
        report = import_release(release, tmp / cfg.split, cfg.workers, cfg.mask_aspect_tolerance)
        if report.images == 0:
            raise EliteError(f"download.source: no <ImageID>.jpg images in {release.images_dir}")
        counts = report.as_dict()
        write_json(tmp / "release.json", {"stamp": stamp, "split": cfg.split, "dataset": cfg.dataset,
                                          "source": cfg.source, "layout": release.layout, **counts})
    dataset = import_split(out / cfg.split, scoped_dataset(cfg.dataset), stamp)
    metrics = {**counts, "source": cfg.source, "dataset": cfg.dataset, "fiftyone_samples": len(dataset),
               "fiftyone_boxes": dataset.count("detections.detections"),
               "fiftyone_masks": dataset.count("segmentations.detections")}
    write_json(paths.metrics_file("download"), metrics)
    return metrics

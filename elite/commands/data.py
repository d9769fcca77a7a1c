"""Data commands: `download`, `curate`, `mask` (the data stages; see docs/data.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from elite.config import load_params

# the manifests each data stage writes (relative to the repository root): logged as MLflow datasets of its run
MANIFESTS = {"curate": ["data/curated/global.jsonl", "data/curated/local.jsonl"], "mask": ["data/masks/local.jsonl"]}


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "download",
        help="Open Images split -> data/openimages/ + a persistent FiftyOne dataset",
        description="Get the Open Images split named by params download.source (zoo | synthetic | a local "
        "copy in the official release layout), check it, write data/openimages/ and import it "
        "into FiftyOne; metrics/download.json.",
    )
    d.set_defaults(func=download_cmd)
    c = sub.add_parser(
        "curate",
        help="pick the stage-1/stage-2 samples -> data/curated/{global,local}.jsonl",
        description="Drop unreadable and duplicate images, apply the box rules of params curate, tag the "
        "FiftyOne dataset, write data/curated/ and metrics/curate.json.",
    )
    c.set_defaults(func=curate_cmd)
    m = sub.add_parser(
        "mask",
        help="SAM masks for every stage-2 box and the DreamBench concept images",
        description="Prompt SAM with every box of data/curated/local.jsonl (one encoder pass per image), "
        "write data/masks/ and metrics/mask.json. Masks already written are kept (resume).",
    )
    m.add_argument(
        "--shard",
        metavar="I/N",
        help="process only the I-th of N deterministic slices of the images "
        "(0 <= I < N); the shard that completes the set writes the manifest",
    )
    m.set_defaults(func=mask_cmd)


def _tracked(stage: str, params, run):
    """Run a stage inside its MLflow run (params: profile + its section; numeric metrics logged flat)."""
    from elite.tracking import log_dataset, stage_run

    section = getattr(params, stage)
    logged = {"profile": params.profile, **{f"{stage}.{k}": v for k, v in section.model_dump().items()}}
    with stage_run(stage, logged) as active:
        import mlflow

        metrics = run(section)
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in _flat(metrics).items()}, run_id=active.info.run_id)
        for manifest in MANIFESTS.get(stage, []):  # the Dataset column of the MLflow runs table
            if Path(manifest).is_file():
                log_dataset(mlflow, manifest, "curated")
    return metrics


def _flat(metrics: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


def download_cmd(args) -> None:
    from elite.data.download import run_download

    params = load_params(args.params, args.profile)
    m = _tracked("download", params, lambda section: run_download(section, params))
    print(
        f"download: {m['images']} images, {m['boxes']} boxes, {m['masks']} masks, {m['classes']} classes "
        f"({m['rejected_total']} rows rejected) -> data/openimages, FiftyOne dataset {m['dataset']}"
    )


def curate_cmd(args) -> None:
    from elite.data.curate import run_curate

    m = _tracked("curate", load_params(args.params, args.profile), run_curate)
    print(
        f"curate: {m['images_kept']}/{m['images']} images kept; {m['global']} stage-1 samples, "
        f"{m['local']} stage-2 samples -> data/curated"
    )


def mask_cmd(args) -> None:
    from elite.data.masking import parse_shard, run_mask

    shard = parse_shard(args.shard)
    params = load_params(args.params, args.profile)
    m = _tracked("mask", params, lambda cfg: run_mask(cfg, shard))
    if m is None:
        print(f"mask: shard {shard[0]}/{shard[1]} done; the manifest is written when all {shard[1]} shards are")
    else:
        print(
            f"mask: {m['rows']} stage-2 samples ({m['release']} release masks, {m['sam']} SAM masks, mean SAM IoU "
            f"vs release {m['mean_iou_vs_release']}), {m['dreambench_masks']} DreamBench masks -> data/masks"
        )

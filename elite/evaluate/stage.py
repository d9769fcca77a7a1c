"""The `evaluate` stage: generate DreamBench images with ELITE (and the context rows), score, report.

`elite evaluate` generates whatever is missing, then scores everything and writes metrics/dreambench.json,
plots/lambda_sweep.csv, data/eval/ (images, grids, report.md, scores.jsonl, the figures), a FiftyOne dataset, and an
MLflow run. `elite evaluate --shard i/n` only generates its share of the images (for parallel GPU
workers); a final `elite evaluate` then finds them, fills any gap and scores.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm import tqdm

from elite.errors import EliteError
from elite.evaluate.dreambench import read_subjects
from elite.evaluate.generate import (
    Job,
    Sampler,
    fingerprint,
    generate,
    plan,
    resolve_device,
    select_subjects,
    shard_jobs,
)
from elite.evaluate.report import flatten
from elite.evaluate.scorers import WorldScorer, find_scorer
from elite.evaluate.several import multi_image_jobs, pair_jobs, score_pairs, several_inputs
from elite.images import open_image, open_mask
from elite.io import atomic_file, save_figure, write_json
from elite.models.elite_model import EliteModelConfig
from elite.models.local_control import Lam, block_rows
from elite.shards import parse_shard
from elite.tracking import METRICS_DIGEST_TAG, file_digest, scoped_dataset

log = logging.getLogger(__name__)


def concept_inputs(cfg, rows: list[dict]) -> dict[str, tuple[Path, Path]]:
    """subject -> (concept image, its mask from the mask stage); every one must exist."""
    out = {}
    for row in rows:
        images = row["images"]
        if cfg.concept_image >= len(images):
            raise EliteError(
                f"params evaluate.concept_image is {cfg.concept_image} but subject {row['subject']!r} "
                f"has {len(images)} image(s)"
            )
        image = Path(images[cfg.concept_image])
        if not image.is_file():
            raise EliteError(f"{image}: concept image of subject {row['subject']!r} not found; run `elite dreambench`")
        mask = Path(cfg.masks) / f"{row['subject']}.png"
        if not mask.is_file():
            raise EliteError(
                f"{mask}: SAM mask of subject {row['subject']!r} not found; run `elite mask` first "
                f"(it writes {cfg.masks}/<subject>.png for each DreamBench subject)"
            )
        out[row["subject"]] = (image, mask)
    return out


def check_weights(path: str) -> Path:
    weights = Path(path)
    if not (weights / "elite_config.json").is_file():
        raise EliteError(
            f"{weights}: no ELITE weights (elite_config.json); train them (`elite train-local`) or set "
            f"evaluate.weights to models/pretrained/elite or an `elite import-official` folder"
        )
    return weights


def sweep_by_block(cfg, weights: Path) -> dict[str, Lam] | None:
    """The rows of the sweep by block (`evaluate.sweep_blocks`), from the cross-attention layers the weights carry
    K/V for; None when it is off or the weights have no local branch (then every row would be the global word's)."""
    if cfg.sweep_blocks is None:
        return None
    config = EliteModelConfig.from_pretrained(weights)
    if not config.has_local:
        return None
    return block_rows(config.kv_shapes, cfg.sweep_blocks)


def score(
    jobs: list[Job], rows: list[dict], cfg, device: str, world: WorldScorer | None = None
) -> tuple[list[dict], dict[str, dict], list[dict]]:
    """Per-image CLIP-I / CLIP-T / DINO-I of every single-concept job (and the world scorer's accuracies when
    there is one), real-vs-real per subject, and the scores of the two-concept jobs."""
    from elite.evaluate.metrics import (
        ClipEmbedder,
        DinoEmbedder,
        cosine_to_set,
        mean_distinct_pair_cosine,
        paired_cosine,
    )

    clip = ClipEmbedder(cfg.clip_model, device, cfg.metric_batch)
    dino = DinoEmbedder(cfg.dino_model, device, cfg.metric_batch)
    info = {r["subject"]: r for r in rows}
    real, real_stats = {}, {}
    for row in tqdm(rows, desc="embed real images", unit="subject"):
        images = [open_image(p) for p in row["images"]]
        c, d = clip.images(images), dino.images(images)
        real[row["subject"]] = (c, d)
        n = len(images)
        real_stats[row["subject"]] = {
            "clip_i": mean_distinct_pair_cosine(c),
            "dino_i": mean_distinct_pair_cosine(d),
            "pairs": n * (n - 1),
        }
    scored = []
    for job in tqdm([j for j in jobs if not j.pair], desc="score", unit="prompt"):
        images = [open_image(job.image(i)) for i in range(len(job.seeds))]
        c, d = clip.images(images), dino.images(images)
        text = clip.texts([job.text]).expand(len(images), -1)
        real_c, real_d = real[job.subject]
        clip_i, dino_i, clip_t = cosine_to_set(c, real_c), cosine_to_set(d, real_d), paired_cosine(c, text)
        probed = world.score(images, job.subject, job.text) if world else [{}] * len(images)
        for i in range(len(images)):
            meta = json.loads(job.sidecar(i).read_text())
            scored.append(
                {
                    **job.record(i),
                    "class": job.class_word,
                    "live": info[job.subject]["live"],
                    "family": job.family,
                    "n_real": len(real_c),
                    "clip_i": float(clip_i[i]),
                    "clip_t": float(clip_t[i]),
                    "dino_i": float(dino_i[i]),
                    "generate_s": meta.get("generate_s"),
                    **probed[i],
                }
            )
    return scored, real_stats, score_pairs([j for j in jobs if j.pair], clip, world)


def encode_times(cfg, rows: list[dict], variant: str = "elite") -> dict[str, float]:
    """Seconds to get each subject's concept: ELITE's encoder pass, or a baseline's optimisation."""
    name, key = ("concept.json", "encode_s") if variant == "elite" else ("inversion/inversion.json", "seconds")
    out = {}
    for row in rows:
        path = Path(cfg.out) / variant / row["subject"] / name
        if path.is_file():
            out[row["subject"]] = json.loads(path.read_text())[key]
    return out


def grids(cfg, jobs: list[Job], concepts: dict[str, tuple[Path, Path]]) -> dict[str, Path]:
    from PIL import Image

    from elite.evaluate.report import make_grid, masked, save_image

    out = {}
    for subject, (image_path, mask_path) in concepts.items():
        image = open_image(image_path)
        concept = [image, masked(image, open_mask(mask_path, image.size))]
        rows = []
        for job in (j for j in jobs if j.variant == "elite" and j.subject == subject):
            images = []
            for i in range(len(job.seeds)):
                with Image.open(job.image(i)) as img:
                    images.append(img.convert("RGB"))
            rows.append((f"{job.prompt} (lambda {job.lam:g})", images))
        out[subject] = save_image(make_grid(concept, rows, cfg.grid_tile), Path(cfg.out) / "grids" / f"{subject}.png")
    return out


def run_evaluate(params, shard: str | None = None) -> dict | None:
    """The stage. Returns the metrics (None for a shard run, which only generates)."""
    cfg = params.evaluate
    shard_t = parse_shard(shard)
    rows = select_subjects(read_subjects(cfg.subjects_file), cfg.subjects)
    concepts = concept_inputs(cfg, rows)
    several = several_inputs(cfg, rows)
    weights = check_weights(cfg.weights)
    world = find_scorer(cfg, params)
    if cfg.pairs and world is None:
        raise EliteError(
            "params evaluate.pairs: the two-concept rows need a world scorer (the toy world's probes and "
            "toy_concepts.json); set evaluate.pairs to 0 or use profile toy"
        )
    named = world.words() if world else None
    weights_id = fingerprint(weights)
    jobs = plan(cfg, rows, concepts, weights_id, params.baselines, named, sweep_by_block(cfg, weights))
    jobs += multi_image_jobs(cfg, [j for j in jobs if j.variant == "elite"], several)
    jobs += pair_jobs(cfg, rows, weights_id, {s: fingerprint(*p) for s, p in concepts.items()}, named)
    device, dtype = resolve_device(cfg.device, cfg.dtype)
    if cfg.cpu_threads:
        import torch

        torch.set_num_threads(cfg.cpu_threads)
    if shard_t is not None:
        mine = shard_jobs(jobs, shard_t)
        counts = generate(mine, Sampler(cfg, concepts, device, dtype, params.baselines, several))
        print(
            f"shard {shard}: {len(mine)} of {len(jobs)} prompts; generated {counts['generated']} images, "
            f"{counts['skipped']} already there"
        )
        return None

    from elite.tracking import stage_run

    flat_params = {"profile": params.profile, **{f"evaluate.{k}": v for k, v in cfg.model_dump().items()}}
    with stage_run("evaluate", flat_params, datasets=[(cfg.subjects_file, "evaluation")]):
        import mlflow

        counts = generate(jobs, Sampler(cfg, concepts, device, dtype, params.baselines, several))
        scored, real, pair_rows = score(jobs, rows, cfg, device, world)
        extra = world.context() if world else {}
        metrics, grid_paths = write_outputs(
            cfg, params.profile, jobs, rows, concepts, scored, pair_rows, real, device, extra
        )
        mlflow.log_metrics(
            {**flatten(metrics), "images_generated": counts["generated"], "images_skipped": counts["skipped"]}
        )
        _log_artifacts(mlflow, cfg, metrics, grid_paths)
    print(
        f"evaluate: {counts['generated']} images generated, {counts['skipped']} reused; "
        f"CLIP-T {_f(metrics['overall']['clip_t'])}  CLIP-I {_f(metrics['overall']['clip_i'])}  "
        f"DINO-I {_f(metrics['overall']['dino_i'])}  -> {cfg.metrics}, {Path(cfg.out) / 'report.md'}"
    )
    return metrics


def _f(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def write_outputs(
    cfg, profile: str, jobs, rows, concepts, scored, pair_rows, real, device: str, extra: dict | None = None
) -> tuple[dict, dict[str, Path]]:
    """scored: the single-concept images' rows; pair_rows: the two-concept images' rows; extra: the world
    scorer's blocks (what its probes read, oracle rows)."""
    from elite.evaluate.report import build_metrics, write_fiftyone, write_report
    from elite.evaluate.rows_figure import rows_figure
    from elite.evaluate.several import pair_grids, several_metrics
    from elite.evaluate.sweep import block_rows_of, blocks_figure, sweep_figure, sweep_rows, write_sweep_csv

    out = Path(cfg.out)
    inversion_s = {m: encode_times(cfg, rows, m) for m in ("ti", "xti")}
    metrics = build_metrics(scored, real, encode_times(cfg, rows), inversion_s)
    metrics.update(several_metrics(scored, pair_rows))
    metrics.update(extra or {})
    write_json(Path(cfg.metrics), metrics)
    with atomic_file(out / "scores.jsonl", suffix=".jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in scored + pair_rows))
    sweep = sweep_rows(metrics["sweep"])
    write_sweep_csv(Path(cfg.sweep_csv), sweep)
    save_figure(sweep_figure(sweep) if sweep else None, out / "lambda_sweep.png")
    blocks = block_rows_of(metrics["blocks"])
    save_figure(blocks_figure(blocks) if blocks else None, out / "lambda_blocks.png")
    save_figure(rows_figure(metrics), out / "rows.png")
    grid_paths = {**grids(cfg, jobs, concepts), **pair_grids(cfg, jobs, concepts)}
    settings = {
        "profile": profile,
        "weights": cfg.weights,
        "steps": cfg.steps,
        "guidance": cfg.guidance,
        "scheduler": cfg.scheduler,
        "images_per_prompt": cfg.images_per_prompt,
        "device": device,
    }
    write_report(out / "report.md", metrics, settings, grid_paths)
    if cfg.fiftyone_dataset:
        name = scoped_dataset(cfg.fiftyone_dataset)
        n = write_fiftyone(name, scored)
        print(f"FiftyOne dataset {name!r}: {n} samples (sort by dino_i in the App: `fiftyone app launch`)")
    return metrics, grid_paths


def _log_artifacts(mlflow, cfg, metrics: dict, grid_paths: dict[str, Path]) -> None:
    out = Path(cfg.out)
    for figure in ("lambda_sweep.png", "lambda_blocks.png", "rows.png"):
        if (out / figure).is_file():
            mlflow.log_artifact(str(out / figure))
    for grid in grid_paths.values():
        mlflow.log_artifact(str(grid), "grids")
    mlflow.log_artifact(str(out / "report.md"))
    mlflow.log_artifact(str(cfg.metrics))
    mlflow.set_tag(METRICS_DIGEST_TAG, file_digest(cfg.metrics))  # how `elite register` finds this run
    if cfg.fiftyone_dataset:
        mlflow.set_tag("fiftyone_dataset", scoped_dataset(cfg.fiftyone_dataset))

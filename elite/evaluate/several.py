"""The evaluation rows beyond the paper (issue 16): a concept from several images, two concepts in one prompt.

- `images<k>` (`evaluate.multi_images`): the `elite` row again (same prompts, lambda and seeds) with the
  concept fused from the subject's first k images (their masks come from the mask stage,
  `mask.concept_extra_images`), so the rows differ only in how many images ELITE saw; the `elite` row is k = 1.
- Two concepts (`evaluate.pairs`: subject i with subject i + 1 of the evaluated list, on every template of
  `evaluate.pair_prompts`, `{0}` the first concept and `{1}` the second), one row per variant:
  `pair` (ELITE, S1* and S2*, Eq. 8 per concept), `pair_naive` (one local branch for both: the baseline),
  `pair_class` (the base model with the two class words) and, in the toy world, `pair_named` (the base model
  with both identities in words). The four share their seeds.
Two-concept images are scored in the toy world (elite.toy.regions: each concept's identity on its own half,
the swap rate, each half's class; the scene probe for the scene).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from elite.data.paths import concept_mask_name
from elite.errors import EliteError
from elite.evaluate.generate import PAIR_MODES, Job, family_of, fingerprint, image_seed, slug
from elite.placeholders import placeholder_names

PAIR_VARIANTS = (*PAIR_MODES, "pair_class", "pair_named")


def several_inputs(cfg, rows: list[dict]) -> dict[str, list[tuple[Path, Path]]]:
    """subject -> its first max(multi_images) images from the concept image on, each with its SAM mask."""
    k = max(cfg.multi_images, default=1)
    if k < 2:
        return {}
    out = {}
    for row in rows:
        images = row["images"][cfg.concept_image : cfg.concept_image + k]
        if len(images) < k:
            raise EliteError(
                f"params evaluate.multi_images asks for {k} images but subject {row['subject']!r} has "
                f"{len(images)} from evaluate.concept_image on; lower multi_images"
            )
        pairs = []
        for i, image in enumerate(images):
            mask = Path(cfg.masks) / concept_mask_name(row["subject"], image, first=i == 0)
            if not mask.is_file():
                raise EliteError(
                    f"{mask}: SAM mask of image {i} of subject {row['subject']!r} not found; set "
                    f"mask.concept_extra_images to at least {k - 1} and run `elite mask`"
                )
            pairs.append((Path(image), mask))
        out[row["subject"]] = pairs
    return out


def multi_image_jobs(cfg, elite_jobs: list[Job], several: dict[str, list[tuple[Path, Path]]]) -> list[Job]:
    """The `images<k>` rows: each `elite` job again with the concept of the subject's first k images."""
    out = []
    for k in cfg.multi_images:
        for job in elite_jobs:
            concept = fingerprint(*(p for pair in several[job.subject][:k] for p in pair))
            out.append(
                dataclasses.replace(
                    job,
                    variant=f"images{k}",
                    folder=Path(cfg.out) / f"images{k}" / job.subject / job.folder.name,
                    settings={**job.settings, "concept": concept},
                    images=k,
                )
            )
    return out


def subject_pairs(cfg, rows: list[dict]) -> list[tuple[dict, dict]]:
    if cfg.pairs and len(rows) < 2:
        raise EliteError("params evaluate.pairs needs at least 2 evaluated subjects")
    return [(rows[i], rows[(i + 1) % len(rows)]) for i in range(min(cfg.pairs, len(rows)))]


def pair_jobs(cfg, rows: list[dict], weights_id: str, concept_ids: dict[str, str], named: dict | None) -> list[Job]:
    """The two-concept rows of every pair and template; `named` (toy): subject -> identity words."""
    sampler = {"steps": cfg.steps, "guidance": cfg.guidance, "scheduler": cfg.scheduler}
    variants = [v for v in PAIR_VARIANTS if v != "pair_named" or named]
    jobs = []
    for a, b in subject_pairs(cfg, rows):
        subject = f"{a['subject']}+{b['subject']}"
        for template in cfg.pair_prompts:
            text = fill_pair(template, a["class"], b["class"])
            family, lam = family_of(template, cfg.families)
            seeds = tuple(image_seed(cfg.seed, subject, template, i) for i in range(cfg.images_per_prompt))
            for variant in variants:
                if variant == "pair_class":
                    prompt = text
                elif variant == "pair_named":
                    prompt = fill_pair(template, *(f"{named[r['subject']]} {r['class']}" for r in (a, b)))
                else:
                    words = [
                        f"{p} {r['class']}" if cfg.class_word_in_prompt else p
                        for p, r in zip(placeholder_names(2), (a, b))
                    ]
                    prompt = fill_pair(template, *words)
                elite = variant in PAIR_MODES
                settings = {**sampler, "prompt": prompt, "lam": lam if elite else None, "base": cfg.base}
                if elite:
                    settings.update(weights=weights_id, concept=[concept_ids[a["subject"]], concept_ids[b["subject"]]])
                jobs.append(
                    Job(
                        variant,
                        subject,
                        f"{a['class']}+{b['class']}",
                        template,
                        family,
                        lam if elite else None,
                        prompt,
                        text,
                        Path(cfg.out) / variant / subject / slug(text),
                        seeds,
                        settings,
                        pair=(a["subject"], b["subject"]),
                    )
                )
    return jobs


def fill_pair(template: str, first: str, second: str) -> str:
    """A two-concept template with both fields filled, whitespace collapsed."""
    if "{0}" not in template or "{1}" not in template:
        raise EliteError(f"params evaluate.pair_prompts: {template!r} needs {{0}} and {{1}} (the two concepts)")
    return " ".join(template.format(first, second).split())


# --- scoring, metrics, report ---------------------------------------------------------------------------------
def score_pairs(jobs: list[Job], clip, world) -> list[dict]:
    """Per two-concept image: CLIP-T against the prompt with the class words and the world scorer's pair scores
    (each concept read in its own place; the scene)."""
    if not jobs:
        return []
    from elite.evaluate.metrics import paired_cosine
    from elite.images import open_image

    out = []
    for job in jobs:
        images = [open_image(job.image(i)) for i in range(len(job.seeds))]
        clip_t = paired_cosine(clip.images(images), clip.texts([job.text]).expand(len(images), -1))
        scores = world.score_pair(images, job.pair, job.text)
        for i in range(len(images)):
            out.append({**job.record(i), "pair": list(job.pair), "clip_t": float(clip_t[i]), **scores[i]})
    return out


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def several_metrics(scored: list[dict], pair_rows: list[dict]) -> dict:
    """`images`: {k: the accuracies of the rows with k images} (k = 1 is the `elite` row), `pairs`: {variant:
    the pair scores} with `single_identity_acc`, the `elite` row's identity accuracy (the issue's reference)."""
    from elite.evaluate.report import aggregate
    from elite.evaluate.scorers import score_keys

    out: dict = {}
    ks = sorted({int(r["variant"][6:]) for r in scored if r["variant"].startswith("images")})
    if ks:
        out["images"] = {
            str(k): aggregate([r for r in scored if r["variant"] == ("elite" if k == 1 else f"images{k}")])
            for k in [1, *ks]
        }
    if pair_rows:
        elite = [r for r in scored if r["variant"] == "elite"]
        pairs: dict = {"single_identity_acc": _mean(elite, "identity_acc")}
        for variant in PAIR_VARIANTS:
            rows = [r for r in pair_rows if r["variant"] == variant]
            if rows:
                pairs[variant] = {
                    **{key: _mean(rows, key) for key in (*score_keys(rows), "clip_t")},
                    "images": len(rows),
                }
        out["pairs"] = pairs
    return out


def report_lines(metrics: dict) -> list[str]:
    """The report's sections of the several-image and two-concept rows (none when they did not run)."""
    from elite.evaluate.report import _fmt, _table

    lines: list[str] = []
    if "images" in metrics:
        keys = [
            k
            for k in ("identity_acc", "colour_acc", "pattern_acc", "scene_acc", "clip_i", "dino_i", "clip_t")
            if metrics["images"]["1"].get(k) is not None
        ]
        lines += [
            "",
            "## A concept from several images",
            "",
            "The `elite` row again with the concept fused from the subject's first k images (same prompts, "
            "lambda, seeds).",
            "",
        ]
        lines += _table(
            ["images", *keys, "n"],
            [[k, *(v.get(key) for key in keys), v["images"]] for k, v in metrics["images"].items()],
        )
    if "pairs" in metrics:
        pairs = metrics["pairs"]
        cols = [
            "a_identity_acc",
            "b_identity_acc",
            "both_identity_acc",
            "swap_rate",
            "a_class_acc",
            "b_class_acc",
            "scene_acc",
            "clip_t",
        ]
        lines += [
            "",
            "## Two concepts in one prompt",
            "",
            "S1* on the left half, S2* on the right (the toy world's two-object layout); identity = colour and "
            f"pattern by the region probe. Single-concept ELITE identity: {_fmt(pairs['single_identity_acc'])}.",
            "",
        ]
        lines += _table(
            ["row", *cols, "n"],
            [[v, *(pairs[v].get(c) for c in cols), pairs[v]["images"]] for v in PAIR_VARIANTS if v in pairs],
        )
    return lines


def pair_grids(cfg, jobs: list[Job], concepts: dict[str, tuple[Path, Path]]) -> dict[str, Path]:
    """Per pair: the two concept images, then one row per variant with the first image of every template."""
    from PIL import Image

    from elite.evaluate.report import make_grid, save_image
    from elite.images import open_image

    out = {}
    for subject in dict.fromkeys(j.subject for j in jobs if j.pair):
        mine = [j for j in jobs if j.subject == subject]
        concept = [open_image(concepts[s][0]) for s in mine[0].pair]
        rows = []
        for variant in PAIR_VARIANTS:
            images = []
            for job in (j for j in mine if j.variant == variant):
                with Image.open(job.image(0)) as img:
                    images.append(img.convert("RGB"))
            if images:
                rows.append((f"{variant}: {next(j.prompt for j in mine if j.variant == variant)}", images))
        out[subject] = save_image(
            make_grid(concept, rows, cfg.grid_tile), Path(cfg.out) / "grids" / "pairs" / f"{subject}.png"
        )
    return out

"""The generation plan of the evaluate stage: which images, with which prompt, lambda and seed.

A job is one (variant, subject, prompt[, lambda]) with its N images:
- `elite`: ELITE with S* in the prompt and the prompt family's lambda;
- `baseline`: plain Stable Diffusion (the same base) with the class word instead of S*;
- `sweep`: ELITE on a subset at every lambda of `evaluate.sweep_lams`;
- `blocks`: ELITE on the sweep's subset with lambda `evaluate.sweep_blocks` on one cross-attention part or block
  at a time (elite.models.local_control.block_rows; the row's name in `Job.row`);
- `ti` / `xti`: the optimisation baselines (params `baselines`) on their subjects, with S* in the
  prompt, sampled on the base model from the word(s) learned once per subject on the concept image.
Each image's seed depends only on `evaluate.seed`, the subject, the template and the image index, so
the three variants share their starting noise and any run reproduces any image. An image counts as
done when its PNG and its JSON sidecar (prompt, lambda, seed, sampler, a fingerprint of the weights,
concept image and mask; generation seconds) exist and the settings match: a rerun skips it, a changed
setting regenerates it. `--shard i/n` takes every n-th job of the full, deterministic list.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from elite.errors import EliteError
from elite.evaluate.dreambench import fill
from elite.io import atomic_file, write_json
from elite.models.local_control import Lam

# + images<k> and pair_* (several.py)
VARIANTS = ("elite", "baseline", "sweep", "blocks", "ti", "xti", "global", "named")
TEXT_ONLY = ("baseline", "named", "pair_class", "pair_named")  # the base model on a text prompt
PAIR_MODES = {"pair": "per_concept", "pair_naive": "naive"}  # ELITE with two concepts: its multi_concept rule
INVERSIONS = ("ti", "xti")


@dataclass(frozen=True)
class Job:
    variant: str
    subject: str
    class_word: str
    template: str  # the published template ({0} unique token, {1} class word)
    family: str
    lam: Lam | None  # None for the baseline; a per-block dict in the `blocks` rows
    prompt: str  # what the model is given
    text: str  # the prompt with the class word instead of S*: CLIP-T text and the baseline's prompt
    folder: Path
    seeds: tuple[int, ...]
    settings: dict = field(hash=False, compare=False)
    images: int = 1  # images of the concept ELITE sees (the several-image rows `images<k>`)
    pair: tuple[str, ...] = ()  # two-concept rows: the subjects of S1* and S2*
    row: str = ""  # the `blocks` rows: the row's name (`up.block_1`, ...)

    def image(self, i: int) -> Path:
        return self.folder / f"{i}.png"

    def sidecar(self, i: int) -> Path:
        return self.folder / f"{i}.json"

    def done(self, i: int) -> bool:
        try:
            meta = json.loads(self.sidecar(i).read_text())
        except (OSError, ValueError):
            return False
        return self.image(i).is_file() and meta.get("settings") == self.settings

    def record(self, i: int) -> dict:
        """What a score row of image i says about its job."""
        return {
            "variant": self.variant,
            "subject": self.subject,
            "template": self.template,
            "prompt": self.prompt,
            "text": self.text,
            "lam": self.lam,
            "index": i,
            "seed": self.seeds[i],
            "path": self.image(i).as_posix(),
            **({"row": self.row} if self.row else {}),
        }

    def missing(self) -> list[int]:
        return [i for i in range(len(self.seeds)) if not self.done(i)]


def image_seed(base: int, subject: str, template: str, index: int) -> int:
    digest = hashlib.sha256(f"{base}|{subject}|{template}|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:80] or "prompt"


def spread(items: list, k: int | None) -> list:
    """k items evenly spaced over the list (all when k is None or >= len)."""
    if k is None or k >= len(items):
        return list(items)
    return [items[i] for i in sorted(set(np.linspace(0, len(items) - 1, k).round().astype(int).tolist()))]


def family_of(template: str, families) -> tuple[str, float]:
    for i, fam in enumerate(families):
        try:
            if re.search(fam.pattern, template):
                return fam.name, fam.lam
        except re.error as exc:
            raise EliteError(
                f"params evaluate.families[{i}].pattern {fam.pattern!r} is not a regular expression ({exc})"
            ) from None
    raise EliteError(
        f'prompt {template!r} matches no evaluate.families pattern; add a family (pattern "" matches all)'
    )


def select_subjects(rows: list[dict], wanted: list[str] | None, field: str = "evaluate.subjects") -> list[dict]:
    if wanted is None:
        return rows
    by_name = {r["subject"]: r for r in rows}
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise EliteError(f"params {field}: {', '.join(unknown)} not in subjects.json (have: {', '.join(by_name)})")
    return [by_name[w] for w in wanted]


def subject_templates(row: dict, cfg) -> list[str]:
    templates = list(dict.fromkeys(list(cfg.extra_prompts) + spread(list(row["prompts"]), cfg.max_prompts)))
    for t in cfg.extra_prompts:
        if "{0}" not in t:
            raise EliteError(f"params evaluate.extra_prompts: {t!r} needs {{0}} where the concept goes")
    return templates


def fingerprint(*paths: Path) -> str:
    """SHA-256 over the given files (folders: their files, sorted)."""
    digest = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
        for f in files:
            digest.update(f.name.encode())
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def inversion_settings(baselines, method: str) -> dict:
    """What an inversion depends on (besides the base model and the concept): its images are redone when it changes."""
    return {**getattr(baselines, method).model_dump(), "seed": baselines.seed, "flip_p": baselines.flip_p}


def plan(
    cfg,
    subjects: list[dict],
    concepts: dict[str, tuple[Path, Path]],
    weights_id: str,
    baselines=None,
    named: dict[str, str] | None = None,
    blocks: dict[str, Lam] | None = None,
) -> list[Job]:
    """Every job of the stage in a fixed order: elite, baseline, sweep, blocks (one per row of `blocks`: name ->
    lambda), ti/xti, then global (ELITE at lambda 0, `evaluate.global_row`) and named (the base model with the
    subject's identity words of `named` in place of S*: what text alone can do; toy world); subjects and prompts
    as listed."""
    _check_folder_names(subjects, cfg)
    job = _job_maker(cfg, concepts, weights_id, baselines, named)
    out = Path(cfg.out)

    def rows(variant, chosen, lam, count=cfg.images_per_prompt, folder=None, pick=lambda templates: templates):
        """One job per (subject, prompt) of `chosen`, under `folder` (default: out/<variant>); `lam` a value or a
        function of the template."""
        return [
            job(
                variant,
                row,
                template,
                lam(template) if callable(lam) else lam,
                folder or out / variant,
                count,
            )
            for row in chosen
            for template in pick(subject_templates(row, cfg))
        ]

    jobs = rows("elite", subjects, lambda template: family_of(template, cfg.families)[1])
    if cfg.baseline:
        jobs += rows("baseline", subjects, None)

    def sweep_subset(variant, lam, folder):
        """The sweep's subjects, prompts and images (the sweep and the sweep by block share them)."""
        return rows(
            variant,
            subjects[: cfg.sweep_subjects],
            lam,
            cfg.sweep_images,
            folder,
            lambda templates: spread(templates, cfg.sweep_prompts),
        )

    for lam in cfg.sweep_lams:
        jobs += sweep_subset("sweep", float(lam), out / "sweep" / f"lam_{lam:g}")
    for name, lam in (blocks or {}).items():
        jobs += [replace(j, row=name) for j in sweep_subset("blocks", lam, out / "blocks" / slug(name))]
    if baselines is not None:
        chosen = select_subjects(subjects, list(baselines.subjects), "baselines.subjects")
        for method in baselines.methods:
            jobs += rows(method, chosen, None)
    if cfg.global_row:
        jobs += rows("global", subjects, 0.0)
    if named:
        jobs += rows("named", subjects, None)
    return jobs


def _check_folder_names(subjects: list[dict], cfg) -> None:
    """Two prompts of a subject must not share an image folder."""
    for row in subjects:
        names = [slug(fill(template, "", row["class"])) for template in subject_templates(row, cfg)]
        twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
        if twice is not None:
            raise EliteError(
                f"subject {row['subject']!r}: two prompts give the same folder name {twice!r}; make them differ"
            )


def _job_maker(cfg, concepts: dict[str, tuple[Path, Path]], weights_id: str, baselines, named: dict | None):
    """`job(variant, row, template, lam, root, n)`: the Job of one (variant, subject, prompt) and its n images in
    root/<subject>/<prompt's slug>: its prompt (S*, the class word or the named identity), seeds and the settings
    its images are checked against."""
    sampler = {"steps": cfg.steps, "guidance": cfg.guidance, "scheduler": cfg.scheduler}
    concept_ids = {s: fingerprint(*paths) for s, paths in concepts.items()}

    def job(variant: str, row: dict, template: str, lam: Lam | None, root: Path, n: int) -> Job:
        family, _ = family_of(template, cfg.families)
        text = fill(template, "", row["class"])
        folder = root / row["subject"] / slug(text)
        if variant == "named":
            prompt = fill(template, named[row["subject"]], row["class"])
        elif variant == "baseline":
            prompt = text
        else:
            prompt = fill(template, cfg.placeholder, row["class"] if cfg.class_word_in_prompt else "")
        seeds = tuple(image_seed(cfg.seed, row["subject"], template, i) for i in range(n))
        settings = {**sampler, "prompt": prompt, "lam": lam, "base": cfg.base}
        if variant in INVERSIONS:
            settings.update(concept=concept_ids[row["subject"]], inversion=inversion_settings(baselines, variant))
        elif variant not in TEXT_ONLY:
            settings.update(weights=weights_id, concept=concept_ids[row["subject"]])
        return Job(variant, row["subject"], row["class"], template, family, lam, prompt, text, folder, seeds, settings)

    return job


def shard_jobs(jobs: list[Job], shard: tuple[int, int] | None) -> list[Job]:
    if shard is None:
        return jobs
    i, n = shard
    return [job for k, job in enumerate(jobs) if k % n == i]


# --- running -------------------------------------------------------------------------------------------------
def resolve_device(name: str, dtype: str) -> tuple[str, torch.dtype]:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EliteError(f"params evaluate.device is {name!r} but no CUDA device is available; use auto or cpu")
    torch_dtype = getattr(torch, dtype) if device.startswith("cuda") else torch.float32
    return device, torch_dtype


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Sampler:
    """Loads the ELITE pipeline / the plain SD pipeline on first use; encodes each concept once."""

    def __init__(
        self,
        cfg,
        concepts: dict[str, tuple[Path, Path]],
        device: str,
        dtype: torch.dtype,
        baselines=None,
        several: dict[str, list[tuple[Path, Path]]] | None = None,
    ) -> None:
        self.cfg, self.concepts, self.device, self.dtype, self.baselines = cfg, concepts, device, dtype, baselines
        self.several = several or {}  # subject -> its first images with their masks (several-image rows)
        self._elite = self._sd = self._base = None
        self._encoded: dict[tuple[str, int], object] = {}
        self._inverted: dict[tuple[str, str], object] = {}

    def elite(self):
        if self._elite is None:
            from elite.pipeline import ElitePipeline

            self._release("_sd")
            self._release("_base")
            self._elite = ElitePipeline.from_pretrained(self.cfg.base, self.cfg.weights, torch_dtype=self.dtype).to(
                self.device
            )
            self._elite.set_progress_bar_config(disable=True)
        return self._elite

    def sd(self):
        if self._sd is None:
            from diffusers import StableDiffusionPipeline

            from elite.schedulers import make_scheduler

            self._release("_elite")
            self._release("_base")
            try:
                sd = StableDiffusionPipeline.from_pretrained(
                    self.cfg.base,
                    safety_checker=None,
                    feature_extractor=None,
                    requires_safety_checker=False,
                    dtype=self.dtype,
                )
            except (OSError, ValueError) as exc:
                raise EliteError(
                    f"cannot load Stable Diffusion from {self.cfg.base!r} ({str(exc).splitlines()[0][:200]})"
                ) from None
            sd.scheduler = make_scheduler(self.cfg.scheduler, sd.scheduler.config)
            sd.set_progress_bar_config(disable=True)
            self._sd = sd.to(self.device)
        return self._sd

    def base(self):
        """The base model without ELITE weights, sampling learned words (the TI / XTI baselines)."""
        if self._base is None:
            from elite.pipeline import ElitePipeline

            self._release("_elite")
            self._release("_sd")
            self._base = ElitePipeline.from_pretrained(self.cfg.base, torch_dtype=self.dtype).to(self.device)
            self._base.set_progress_bar_config(disable=True)
        return self._base

    def inversion(self, method: str, subject: str, class_word: str):
        """The subject's learned concept for `method`, optimised once on the concept image (inside its mask)
        and kept in <out>/<method>/<subject>/inversion/ with its wall time; reused while its settings hold."""
        from elite.baselines.inversion import Inversion, invert

        key = (method, subject)
        if key not in self._inverted:
            folder = Path(self.cfg.out) / method / subject / "inversion"
            settings = {
                **inversion_settings(self.baselines, method),
                "base": self.cfg.base,
                "concept": fingerprint(*self.concepts[subject]),
            }
            marker = folder / "settings.json"
            if marker.is_file() and json.loads(marker.read_text()) == settings:
                result = Inversion.load(folder)
            else:
                image, mask = (Path(p) for p in self.concepts[subject])
                from elite.images import open_image, open_mask

                img = open_image(image)
                result = invert(
                    self.cfg.base,
                    img,
                    open_mask(mask, img.size),
                    method,
                    getattr(self.baselines, method),
                    class_word,
                    self.baselines.seed,
                    self.baselines.flip_p,
                    progress=False,
                )
                result.save(folder)
                write_json(marker, settings)
            self._inverted[key] = result.concept()
        return self._inverted[key]

    def _release(self, name: str) -> None:
        if getattr(self, name) is not None:
            setattr(self, name, None)
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()

    def concept(self, subject: str, images: int = 1):
        """The subject's concept from its concept image, or fused from its first `images` images."""
        key = (subject, images)
        if key not in self._encoded:
            pipe = self.elite()
            if images > 1:
                pairs = self.several[subject][:images]
                self._encoded[key] = pipe.encode_concept([i for i, _ in pairs], masks=[m for _, m in pairs])
                return self._encoded[key]
            image, mask = self.concepts[subject]
            _sync(self.device)
            start = time.perf_counter()
            self._encoded[key] = pipe.encode_concept(image, mask)
            _sync(self.device)
            seconds = time.perf_counter() - start
            write_json(
                Path(self.cfg.out) / "elite" / subject / "concept.json",
                {"encode_s": seconds, "image": str(image), "mask": str(mask), "device": self.device},
            )
        return self._encoded[key]

    def run(self, job: Job, indices: list[int]) -> None:
        """Write the images `indices` of `job`. The job's whole batch is sampled, whatever is missing: a batch of
        another size gives other bits on the same seeds (matrix kernels block by batch), so an evaluation resumed
        after a kill writes the images an uninterrupted run would have."""
        cfg = self.cfg
        wanted, batch = set(indices), range(len(job.seeds))
        gens = [torch.Generator().manual_seed(job.seeds[i]) for i in batch]
        if job.variant in TEXT_ONLY:
            pipe, kwargs = self.sd(), {}
        elif job.variant in INVERSIONS:
            concept = self.inversion(job.variant, job.subject, job.class_word)
            pipe, kwargs = self.base(), {"concept": concept, "scheduler": cfg.scheduler}
        elif job.pair:
            pipe, kwargs = (
                self.elite(),
                {
                    "concept": [self.concept(subject) for subject in job.pair],
                    "multi_concept": PAIR_MODES[job.variant],
                    "lam": job.lam,
                    "scheduler": cfg.scheduler,
                },
            )
        else:
            pipe, kwargs = (
                self.elite(),
                {"concept": self.concept(job.subject, job.images), "lam": job.lam, "scheduler": cfg.scheduler},
            )
        _sync(self.device)
        start = time.perf_counter()
        images = pipe(
            job.prompt,
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance,
            generator=gens,
            num_images_per_prompt=len(batch),
            **kwargs,
        ).images
        _sync(self.device)
        per_image = (time.perf_counter() - start) / len(batch)
        for i, img in zip(batch, images):
            if i not in wanted:
                continue
            with atomic_file(job.image(i), suffix=".png") as tmp:
                img.save(tmp, format="PNG")
            write_json(
                job.sidecar(i),
                {
                    "settings": job.settings,
                    "seed": job.seeds[i],
                    "generate_s": per_image,
                    "device": self.device,
                    "dtype": str(self.dtype).replace("torch.", ""),
                },
            )


def generate(jobs: list[Job], runner: Sampler) -> dict[str, int]:
    """Generate every missing image of `jobs`; returns counts (generated / skipped)."""

    def order(job: Job) -> int:  # fewest model switches: ELITE, then the inversions, then the text-only base
        return 2 if job.variant in TEXT_ONLY else 1 if job.variant in INVERSIONS else 0

    todo = sorted(((job, job.missing()) for job in jobs), key=lambda t: order(t[0]))
    total = sum(len(job.seeds) for job in jobs)
    missing = sum(len(m) for _, m in todo)
    with tqdm(total=missing, desc="generate", unit="img") as bar:
        for job, indices in todo:
            if indices:
                runner.run(job, indices)
                bar.update(len(indices))
    return {"generated": missing, "skipped": total - missing}

"""Optimisation figures: Textual-Inversion-style optimisation vs ELITE encode, the stage-1 training
step with vs without the VAE latent cache, and SAM masking with all boxes in one call vs one per box."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.measure import Samples, figure, headline, interleaved, ratio, ratio_headline
from bench.models import Models, scene, train_manifest
from bench.settings import Settings


def plateau_step(losses: list[float], window: int, rel: float) -> int | None:
    """First step s (1-based, s >= 2 * window) at which the moving average of the last `window`
    losses is less than `rel` (a share) below the moving average one window earlier; None if never."""
    for s in range(2 * window, len(losses) + 1):
        before = sum(losses[s - 2 * window : s - window]) / window
        now = sum(losses[s - window : s]) / window
        if before - now < rel * abs(before):
            return s
    return None


def textual_inversion(
    base: Path, image: Image.Image, mask: Image.Image, params, settings: Settings, encode: dict
) -> dict:
    """elite.baselines.inversion.invert (method "ti", params.yaml baselines.ti of the smoke profile, steps
    capped) on the smoke base; the plateau step is found on the capped run, then the same seeded run is
    repeated stopping there and timed end to end (model loading included), against encode_concept
    (`encode`: the smoke summary of the encode figure)."""
    from elite.baselines.inversion import invert

    b = params.baselines
    kw = dict(class_word="ball", seed=b.seed, flip_p=b.flip_p, progress=False)
    capped = invert(base, image, mask, "ti", b.ti.model_copy(update={"steps": settings.ti_cap}), **kw)
    step = plateau_step(capped.losses, settings.plateau_window, settings.plateau_rel)
    reached = step is not None
    stop = step if reached else settings.ti_cap
    timed = Samples()
    run = timed.record(lambda: invert(base, image, mask, "ti", b.ti.model_copy(update={"steps": stop}), **kw))
    same = np.allclose(run.losses, capped.losses[:stop], rtol=1e-4, atol=1e-6)
    cpu, wall = timed.cpu[0] / encode["median_cpu_s"], timed.wall[0] / encode["median_s"]
    how = (
        f"invert(method='ti') on the smoke base, params.yaml baselines.ti (smoke: lr {b.ti.lr}, batch "
        f"{b.ti.batch_size}), capped at {settings.ti_cap} steps. Plateau: the first step s >= 2w "
        "where the mean loss of "
        f"steps (s-w, s] is less than {settings.plateau_rel:.0%} below that of (s-2w, s-w], w = "
        f"{settings.plateau_window}. "
        "The seeded run is repeated with steps = s and timed end to end (loading included); ratio = that time / the "
        "median smoke encode_concept time of the encode figure"
    )
    sizes = {
        "smoke": {
            "plateau_reached": reached,
            "plateau_step": step,
            "timed_steps": stop,
            "cap": settings.ti_cap,
            "ti_seconds": timed.wall[0],
            "ti_cpu_seconds": timed.cpu[0],
            "ti_cpu_seconds_per_step": timed.cpu[0] / stop,
            "encode_seconds": encode["median_s"],
            "encode_cpu_seconds": encode["median_cpu_s"],
            "ratio": {"cpu": cpu, "wall": wall},
            "rerun_matches_capped_run": bool(same),
            "first_window_loss": float(np.mean(capped.losses[: settings.plateau_window])),
            "loss_at_plateau": float(np.mean(capped.losses[stop - settings.plateau_window : stop])),
            "final_window_loss": float(np.mean(capped.losses[-settings.plateau_window :])),
            "peak_rss_mib": timed.summary()["peak_rss_mib"],
        }
    }
    label = "TI to plateau / ELITE encode" + ("" if reached else " (cap reached, no plateau)")
    return figure(
        "textual_inversion", how, sizes, [headline("smoke", label, cpu, "x", "report (paper: 60000x)", wall=wall)]
    )


@dataclass
class Stage1:
    """Stage 1 as the training code builds it (GlobalStage, its dataset and loss module), outside accelerate."""

    cfg: object
    stage: object
    frozen: object
    rows: list
    module: torch.nn.Module
    trainable: list
    vae_dir: Path


def stage1(name: str, m: Models | None, smoke_root: Path, work: Path, params, settings: Settings) -> Stage1:
    """`name` "smoke": the smoke models loaded as the stage loads them (load_frozen); else the in-memory
    models `m` (SD-v1-sized) at settings.sd_resolution, batch 1."""
    from diffusers import DDPMScheduler

    from elite.models.elite_model import EliteModel
    from elite.pipeline import resolve_image_encoder
    from elite.train.data import read_manifest
    from elite.train.stages import Frozen, GlobalStage, load_frozen

    base, init_dir = params.train_global, smoke_root / "elite"
    manifest = train_manifest(work / f"train_images_{name}", settings.train_rows[name], settings.seed)
    update = {
        "manifest": str(manifest),
        "init": str(init_dir),
        "cache_dir": str(work / f"latents_{name}"),
        "cache_latents": True,
        "crop_pad": [base.crop_pad[0]] * 2,
    }
    if name == "smoke":
        cfg = base.model_copy(update={**update, "base": str(smoke_root / "base")})
        init = EliteModel.from_pretrained(init_dir)
        frozen = load_frozen(
            cfg.base, resolve_image_encoder(init_dir, init.config.image_encoder), torch.device("cpu"), torch.float32
        )
        vae_dir = Path(cfg.base) / "vae"
    else:
        cfg = base.model_copy(update={**update, "resolution": settings.sd_resolution, "batch_size": 1})
        init = m.elite
        frozen = Frozen.in_memory(
            vae=m.vae,
            text_encoder=m.text_encoder,
            tokenizer=m.tokenizer,
            unet=m.unet,
            image_encoder=m.image_encoder,
            image_processor=m.image_processor,
            noise_scheduler=DDPMScheduler.from_config(m.scheduler_config),
        )
        vae_dir = m.vae_dir
    stage = GlobalStage(cfg)
    rows = read_manifest(cfg.manifest, need_mask=False)
    elite = stage.build(init, frozen)
    elite.attach(frozen.unet, use_local=False)
    module = stage.module_class(elite, frozen, cfg).train()
    trainable = [p for p in elite.parameters() if p.requires_grad]
    return Stage1(cfg, stage, frozen, rows, module, trainable, vae_dir)


def training_step(name: str, m: Models | None, smoke_root: Path, work: Path, params, settings: Settings) -> dict:
    """Stage-1 optimiser steps through the training code's own pieces (GlobalStage, its dataset and
    loss module, LatentCache, collate), with and without the latent cache, interleaved step by step."""
    from accelerate import Accelerator

    from elite.train.data import ClipSpec, collate
    from elite.train.latents import LatentCache
    from elite.train.memory import make_optimizer

    s1 = stage1(name, m, smoke_root, work, params, settings)
    cfg, stage, frozen, rows, module, trainable = s1.cfg, s1.stage, s1.frozen, s1.rows, s1.module, s1.trainable
    optimizer = make_optimizer(cfg, trainable, cfg.learning_rate, "train_global")  # the stage's (adamw)
    clip = ClipSpec(frozen.image_processor)
    cache = LatentCache(cfg.cache_dir, rows, s1.vae_dir, cfg.resolution, cfg.crop_pad[0])
    plain = stage.dataset(rows, frozen, clip)
    start = time.perf_counter()
    cache.build(plain, frozen.vae, Accelerator(cpu=True), cfg.batch_size)
    cache_build_s = time.perf_counter() - start
    cached = stage.dataset(rows, frozen, clip, cache)
    counters = {"no_cache": 0, "cache": 0}

    def step(dataset, key):
        def call():
            n = counters[key]
            counters[key] += 1
            batch = collate([dataset[d] for d in range(n * cfg.batch_size, (n + 1) * cfg.batch_size)])
            out = module(batch)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return out["loss"].detach().item()

        return call

    samples = interleaved(
        {"no_cache": step(plain, "no_cache"), "cache": step(cached, "cache")}, settings.train_rounds[name], warmup=1
    )
    speed = ratio(samples, "no_cache", "cache")  # time without / time with = images/s with / without
    summary = {k: s.summary() for k, s in samples.items()}
    for k in summary:
        summary[k]["images_per_s"] = cfg.batch_size / summary[k]["median_s"]
        summary[k]["images_per_cpu_s"] = cfg.batch_size / summary[k]["median_cpu_s"]
    sizes = {
        name: {
            "resolution": cfg.resolution,
            "batch_size": cfg.batch_size,
            "rows": len(rows),
            "cache_build_s": cache_build_s,
            **summary,
            "speedup_with_cache": speed,
            "trainable_params_m": round(sum(p.numel() for p in trainable) / 1e6, 1),
        }
    }
    heads = [ratio_headline(name, "stage-1 step: images/s with cache / without", speed, ">= 1.5", lambda v: v >= 1.5)]
    for key, label in (("cache", "with cache"), ("no_cache", "without cache")):
        heads.append(headline(name, f"stage-1 step peak RSS, {label}", summary[key]["peak_rss_mib"], "MiB"))
    how = (
        "one optimiser step = draw a batch from the stage's GlobalDataset (crop, CLIP augmentations, "
        "caption; pixels or "
        "cached latent moments) + collate + GlobalStageModule forward (VAE encode unless cached, CLIP tower, mapper, "
        "text encoder, UNet, loss) + backward + gradient clipping + AdamW step, one process without accelerate's "
        "wrapper; the two variants alternate step by step on the same draws after one warm-up step each; the cache "
        "is built before (cache_build_s)"
    )
    return figure("training", how, sizes, heads)


def sam_masking(name: str, smoke_root: Path, params, settings: Settings) -> dict:
    """elite.data.sam.BoxMasker: all boxes of an image in one call vs one call per box, same images.
    `name`: "tiny" (the smoke profile's SAM, loaded with load_sam) or a SAM type built with random weights."""
    from elite.data.sam import BoxMasker, build_sam_model, load_sam

    rng = np.random.default_rng(settings.seed)
    if name == "tiny":
        model = load_sam(smoke_root / "sam", "cpu")
    else:
        torch.manual_seed(settings.seed)
        model = build_sam_model({"type": name}).eval()
    masker = BoxMasker(model, params.mask.multimask)
    images = []
    for _ in range(settings.sam_images[name]):
        k = int(rng.integers(settings.sam_boxes[0], settings.sam_boxes[1] + 1))
        images.append(scene(rng, int(rng.integers(320, 640)), int(rng.integers(240, 480)), k))

    def batched():
        return [masker(img, boxes)[0] for img, boxes in images]

    def per_box():
        return [np.concatenate([masker(img, [b])[0] for b in boxes]) for img, boxes in images]

    samples = interleaved(
        {"batched": batched, "per_box": per_box}, settings.sam_rounds[name], warmup=1 if name == "tiny" else 0
    )
    speed = ratio(samples, "per_box", "batched")
    agree = float(np.mean([(a == b).mean() for a, b in zip(samples["batched"].last, samples["per_box"].last)]))
    sizes = {
        name: {
            "images": len(images),
            "boxes": [len(b) for _, b in images],
            "multimask": params.mask.multimask,
            "image_size": model.image_encoder.img_size,
            **{k: s.summary() for k, s in samples.items()},
            "speedup_batched": speed,
            "mask_pixel_agreement": agree,
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        }
    }
    how = (
        f"BoxMasker(model, multimask={params.mask.multimask}) on generated images with {settings.sam_boxes[0]}-"
        f"{settings.sam_boxes[1]} boxes each: masker(image, boxes) once per image vs masker(image, "
        "[box]) per box (each "
        "call sets the image, i.e. runs the image encoder); mask_pixel_agreement compares the masks of both ways"
    )
    heads = [ratio_headline(name, "SAM: per-box calls / one call per image", speed, ">= 3", lambda v: v >= 3)]
    return figure("sam", how, sizes, heads)


MEMORY_OPTIONS = {  # params of the training stages: optimizer, gradient_checkpointing, mixed_precision
    "fp32, AdamW": ("adamw", False, "no"),
    "gradient checkpointing": ("adamw", True, "no"),
    "bf16 autocast": ("adamw", False, "bf16"),
    "checkpointing + bf16": ("adamw", True, "bf16"),
    "8-bit AdamW (bitsandbytes)": ("adamw8bit", False, "no"),
}


def training_memory(name: str, m: Models | None, smoke_root: Path, work: Path, params, settings: Settings) -> dict:
    """The peak memory one stage-1 optimiser step adds on top of the resident models, per option of
    elite/train/memory.py (and mixed precision), each option's steps interleaved with the others'."""
    import importlib.util

    from elite.train.data import ClipSpec, collate
    from elite.train.memory import checkpoint_unet, make_optimizer

    s1 = stage1(name, m, smoke_root, work, params, settings)
    dataset = s1.stage.dataset(s1.rows, s1.frozen, ClipSpec(s1.frozen.image_processor))
    batch = collate([dataset[d] for d in range(s1.cfg.batch_size)])
    have_bnb = importlib.util.find_spec("bitsandbytes") is not None
    options = {k: v for k, v in MEMORY_OPTIONS.items() if v[0] != "adamw8bit" or have_bnb}

    def step(optimizer_name: str, checkpointing: bool, precision: str):
        cfg = s1.cfg.model_copy(update={"optimizer": optimizer_name})
        optimizer = make_optimizer(cfg, s1.trainable, cfg.learning_rate, "train_global")

        def call():
            checkpoint_unet(s1.frozen.unet, checkpointing)
            dtype = torch.bfloat16 if precision == "bf16" else None
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                out = s1.module(batch)
            out["loss"].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return out["loss"].detach().float().item()

        return call

    samples = interleaved({k: step(*v) for k, v in options.items()}, settings.train_rounds[name], warmup=1)
    checkpoint_unet(s1.frozen.unet, False)
    summary = {k: v.summary() for k, v in samples.items()}
    sizes = {
        name: {
            "resolution": s1.cfg.resolution,
            "batch_size": s1.cfg.batch_size,
            "bitsandbytes": have_bnb,
            **{k: {"step_peak_mib": v["peak_growth_mib"], "median_s": v["median_s"]} for k, v in summary.items()},
        }
    }
    heads = [
        headline(name, f"stage-1 step, memory above the models: {k}", v["peak_growth_mib"], "MiB", wall=None)
        for k, v in summary.items()
    ]
    how = (
        "one stage-1 optimiser step on one fixed batch (GlobalStageModule forward, backward, optimiser step) per "
        "option: optimizer adamw / adamw8bit, gradient_checkpointing of the frozen UNet, bf16 autocast (CPU); "
        "value = peak RSS during the step minus RSS before it (VmHWM reset before each call), so the models' "
        "resident memory is left out; CPU RSS here, not CUDA memory: the ratios carry over, the absolute "
        "numbers of a paper-sized step on a GPU do not"
        + ("" if have_bnb else "; 8-bit AdamW: not measured, bitsandbytes is not installed")
    )
    return figure("memory", how, sizes, heads)

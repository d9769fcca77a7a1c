"""The training loop shared by both stages, on `accelerate`.

Run it with one process (`elite train-global`) or several (`accelerate launch [--multi_gpu]
--num_processes N -m elite.cli train-global`, any number of nodes through accelerate's launcher):
mixed precision (params `mixed_precision`), gradient accumulation (`accelerator.accumulate`), gradient
clipping, DDP over ELITE's trainable weights only. Each process reads its own disjoint draws (see
`elite.train.data`); the main process alone writes checkpoints, outputs and MLflow records.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from elite.errors import EliteError
from elite.io import atomic_file, write_json
from elite.models.elite_model import EliteModel
from elite.pipeline import resolve_image_encoder
from elite.train.checkpoint import (
    FIELDS,
    clean_partial,
    find_resumable,
    fingerprint,
    load_checkpoint,
    save_checkpoint,
    write_history,
)
from elite.train.data import ClipSpec, DrawSampler, collate, read_manifest, worker_error
from elite.train.latents import LatentCache
from elite.train.memory import checkpoint_unet, make_optimizer
from elite.train.samples import sample_concepts
from elite.train.stages import GlobalStage, LocalStage, load_frozen, sample_grid, save_weights

log = logging.getLogger("elite.train")
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def train(stage: GlobalStage | LocalStage, profile: str) -> dict:
    """Run one stage to `max_steps` (resuming from its newest matching checkpoint); returns its metrics."""
    threads = torch.get_num_threads()
    if stage.cfg.cpu_threads and not has_accelerator():
        torch.set_num_threads(stage.cfg.cpu_threads)
    try:
        return _train(stage, profile)
    finally:
        torch.set_num_threads(threads)


@dataclass
class Run:
    """What one stage's training holds: the accelerator, the models, the optimiser and the data."""

    accelerator: Accelerator
    frozen: object
    elite: torch.nn.Module
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    trainable: list[torch.nn.Parameter]
    dataset: object
    encoder_src: str
    init_dir: Path
    effective_batch: int
    lr: float

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def write_weights(self, directory: Path) -> None:
        save_weights(self.accelerator.unwrap_model(self.module).elite, directory, self.encoder_src)


@dataclass
class Progress:
    """Where the stage stands: the step to start after, the history, the last checkpoint, the MLflow run."""

    start: int = 0
    history: list[dict] = field(default_factory=list)
    last_good: Path | None = None
    run_id: str | None = None
    images: int = 0
    seconds: float = 0.0


def _train(stage: GlobalStage | LocalStage, profile: str) -> dict:
    cfg = stage.cfg
    started = time.perf_counter()
    run = _setup(stage)
    ckpt_dir, fp = Path(cfg.checkpoint_dir), fingerprint(stage.name, cfg, run.init_dir)
    progress = _resume(stage, run, ckpt_dir, fp)
    params = {
        "profile": profile,
        **{f"{stage.name}.{k}": v for k, v in cfg.model_dump().items()},
        "num_processes": run.accelerator.num_processes,
        "effective_batch_size": run.effective_batch,
        "effective_learning_rate": run.lr,
    }
    from elite.tracking import stage_run

    logged = stage_run(stage.name, params, resume_run_id=progress.run_id, datasets=[(cfg.manifest, "training")])
    with logged if run.main else nullcontext() as mlflow_run:
        mlflow = _mlflow() if run.main else None
        run_id = mlflow_run.info.run_id if run.main else None
        _steps(stage, run, progress, {"stage": stage.name, "fingerprint": fp, "mlflow_run_id": run_id}, mlflow)
        metrics = {
            "stage": stage.name,
            "steps": cfg.max_steps,
            "resumed_from_step": progress.start,
            "num_processes": run.accelerator.num_processes,
            "effective_batch_size": run.effective_batch,
            "learning_rate": run.lr,
            "first_loss": _mean_loss(progress.history[:10]),
            "final_loss": _mean_loss(progress.history[-10:]),
            "images_per_second": progress.images / progress.seconds if progress.seconds else None,
            "wall_seconds": time.perf_counter() - started,
        }
        if run.main:
            _write_outputs(stage, run, progress.history, metrics, mlflow)
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    return metrics


def _setup(stage: GlobalStage | LocalStage) -> Run:
    """The accelerator, the frozen models and ELITE's trainable weights on it, the dataset, the optimiser."""
    cfg = stage.cfg
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        cpu=not has_accelerator(),
    )
    set_seed(cfg.seed + accelerator.process_index)
    rows = read_manifest(cfg.manifest, stage.need_mask)
    init_dir = Path(cfg.init)
    init = EliteModel.from_pretrained(init_dir)
    encoder_src = resolve_image_encoder(init_dir, init.config.image_encoder)
    frozen = load_frozen(cfg.base, encoder_src, accelerator.device, DTYPES[cfg.mixed_precision])
    elite = stage.build(init, frozen).to(accelerator.device)
    elite.attach(frozen.unet, use_local=stage.need_mask)
    dataset = _dataset(stage, rows, frozen, accelerator)

    procs, accum = accelerator.num_processes, cfg.gradient_accumulation_steps
    effective_batch, lr = cfg.effective_batch(procs), cfg.effective_learning_rate(procs)
    rule = (
        f"{cfg.learning_rate:g} x {cfg.batch_size} per process x {accum} accumulation x {procs} processes (scale_lr)"
        if cfg.scale_lr
        else "scale_lr off"
    )
    accelerator.print(f"{stage.name}: learning rate {lr:g} = {rule}; effective batch {effective_batch}")
    trainable = [p for p in elite.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, trainable, lr, stage.name)
    checkpoint_unet(frozen.unet, cfg.gradient_checkpointing)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # constant LR (the paper's)
    module, optimizer = accelerator.prepare(stage.module_class(elite, frozen, cfg), optimizer)
    return Run(
        accelerator, frozen, elite, module, optimizer, scheduler, trainable, dataset, encoder_src, init_dir,
        effective_batch, lr,
    )  # fmt: skip


def _dataset(stage: GlobalStage | LocalStage, rows: list, frozen, accelerator: Accelerator):
    """The stage's dataset, reading VAE latents from a cache (built first) when `cache_latents` is on."""
    cfg = stage.cfg
    clip = ClipSpec(frozen.image_processor)
    if not getattr(cfg, "cache_latents", False):
        return stage.dataset(rows, frozen, clip, None)
    if cfg.crop_pad[0] != cfg.crop_pad[1]:
        raise EliteError(
            f"{stage.name}.cache_latents needs a fixed crop_pad [n, n] (cached targets are not augmented)"
        )
    cache = LatentCache(cfg.cache_dir, rows, Path(cfg.base) / "vae", cfg.resolution, cfg.crop_pad[0])
    dataset = stage.dataset(rows, frozen, clip, cache)
    encoded = cache.build(stage.dataset(rows, frozen, clip), frozen.vae, accelerator, cfg.batch_size)
    log.info("latent cache %s: %d new of %d", cache.dir, encoded, len(rows))
    return dataset


def _resume(stage: GlobalStage | LocalStage, run: Run, ckpt_dir: Path, fp: str) -> Progress:
    """The newest checkpoint of this fingerprint, loaded into the run (else a fresh start)."""
    if run.main:
        clean_partial(ckpt_dir)
    run.accelerator.wait_for_everyone()
    ckpt = find_resumable(ckpt_dir, fp, stage.cfg.max_steps)
    if ckpt is None:
        return Progress()
    history = load_checkpoint(ckpt, run.elite, run.optimizer, run.scheduler, run.accelerator)
    run.accelerator.print(f"{stage.name}: resuming from {ckpt.path} (step {ckpt.step} of {stage.cfg.max_steps})")
    return Progress(ckpt.step, history, ckpt.path, ckpt.state.get("mlflow_run_id"))


def _steps(stage: GlobalStage | LocalStage, run: Run, progress: Progress, state: dict, mlflow) -> None:
    """From progress.start to max_steps: optimiser steps, MLflow metrics, checkpoints and sample grids."""
    cfg, accelerator = stage.cfg, run.accelerator
    accum, procs = cfg.gradient_accumulation_steps, accelerator.num_processes
    concepts = sample_concepts(cfg, run.dataset, stage.need_mask) if run.main and cfg.sample_every else []
    if concepts:
        mlflow.log_dict({"rows": [c.name for c in concepts]}, "sample_concepts.json")  # the grids' rows, in order
    loader = DataLoader(
        run.dataset,
        batch_size=cfg.batch_size,
        collate_fn=collate,
        num_workers=cfg.num_workers,
        sampler=DrawSampler(
            progress.start * accum, cfg.max_steps * accum, cfg.batch_size, accelerator.process_index, procs
        ),
    )
    batches = iter(loader)
    bar_total = tqdm(
        total=cfg.max_steps, initial=progress.start, desc=stage.name, disable=not accelerator.is_local_main_process
    )
    with bar_total as bar:
        for step in range(progress.start + 1, cfg.max_steps + 1):
            tick = time.perf_counter()
            try:
                mean, grad_norm = _optimizer_step(accelerator, run.module, run.optimizer, batches, run.trainable, cfg)
            except FloatingPointError as exc:
                good = str(progress.last_good) if progress.last_good else "none (no checkpoint written yet)"
                raise EliteError(
                    f"{stage.name}: loss is {exc} at step {step}; last good checkpoint: {good}; "
                    f"lower {stage.name}.learning_rate or fix the data, then run again to resume"
                ) from None
            run.scheduler.step()
            seconds = time.perf_counter() - tick
            progress.images, progress.seconds = progress.images + run.effective_batch, progress.seconds + seconds
            row = {
                "step": step,
                "loss": mean[0],
                "loss_ldm": mean[1],
                "loss_reg": mean[2],
                "lr": run.scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "images_per_second": run.effective_batch / seconds,
            }
            progress.history.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            if run.main:
                mlflow.log_metrics({k: v for k, v in row.items() if k != "step" and math.isfinite(v)}, step=step)
            if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
                progress.last_good = save_checkpoint(
                    accelerator, Path(cfg.checkpoint_dir), step, run.write_weights, run.optimizer, run.scheduler,
                    progress.history, state, cfg.keep_checkpoints,
                )  # fmt: skip
                accelerator.print(f"{stage.name}: checkpoint {progress.last_good} written")
            if run.main and cfg.sample_every and (step % cfg.sample_every == 0 or step == cfg.max_steps):
                _log_sample(accelerator, run.module, run.frozen, concepts, stage, step, mlflow)


def _write_outputs(stage: GlobalStage | LocalStage, run: Run, history: list[dict], metrics: dict, mlflow) -> None:
    """The main process's outputs: weights, metrics, the loss history (plot), and their MLflow records."""
    cfg = stage.cfg
    run.write_weights(Path(cfg.out))
    write_json(Path(cfg.metrics), metrics)
    with atomic_file(Path(cfg.plot)) as tmp:
        write_history(history, tmp)
    mlflow.log_metrics({f"final_{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None})
    mlflow.log_artifacts(cfg.out, artifact_path="weights")
    mlflow.log_artifact(cfg.metrics)
    run.accelerator.print(
        f"{stage.name}: weights written to {cfg.out} (loss {metrics['first_loss']:.4f} -> "
        f"{metrics['final_loss']:.4f} over {len(history)} steps)"
    )


def _optimizer_step(accelerator, module, optimizer, batches, trainable, cfg) -> tuple[list[float], torch.Tensor]:
    """One optimiser step over `gradient_accumulation_steps` micro-batches. Returns the mean (loss, L_LDM,
    regulariser) over processes and micro-batches and the gradient norm before clipping. A non-finite loss
    (seen by every process, as it is reduced first) raises FloatingPointError before its backward pass."""
    accum = cfg.gradient_accumulation_steps
    module.train()
    sums = torch.zeros(3, device=accelerator.device)
    grad_norm = torch.tensor(float("nan"))
    for micro in range(accum):
        batch = _next(batches)
        with accelerator.accumulate(module):
            out = module(batch)
            parts = torch.stack([out["loss"].detach().float(), out["loss_ldm"].float(), out["loss_reg"].float()])
            losses = accelerator.reduce(parts, reduction="mean")
            if not torch.isfinite(losses).all():
                where = f" (micro-batch {micro + 1} of {accum})" if accum > 1 else ""
                raise FloatingPointError(f"{losses[0].item()}{where}")
            accelerator.backward(out["loss"])
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sums += losses
    return (sums / accum).tolist(), grad_norm


def has_accelerator() -> bool:
    """A GPU (or other accelerator) torch can use. Without one, accelerate must be told `cpu=True`, else a
    multi-process launch on a CPU machine falls back to independent single processes instead of gloo."""
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def _mlflow():
    import mlflow

    return mlflow


def _next(batches):
    try:
        return next(batches)
    except StopIteration:
        raise RuntimeError("the draw sampler ran out before max_steps (a bug)") from None
    except Exception as exc:
        wrapped = worker_error(exc)
        if wrapped is not None:
            raise wrapped from None
        raise


def _mean_loss(rows: list[dict]) -> float | None:
    return sum(r["loss"] for r in rows) / len(rows) if rows else None


def _log_sample(accelerator, module, frozen, concepts, stage, step: int, mlflow) -> None:
    elite = accelerator.unwrap_model(module).elite
    with accelerator.autocast():
        grid = sample_grid(frozen, elite, concepts, stage.cfg, stage.sample_lam())
    elite.attach(frozen.unet, use_local=stage.need_mask)  # the pipeline re-attached the same projections
    mlflow.log_image(grid, artifact_file=f"samples/step_{step:07d}.png")


__all__ = ["train", "FIELDS"]

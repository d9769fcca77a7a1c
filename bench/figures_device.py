"""The `device_memory` figure: the peak memory of one stage-1 and one stage-2 optimiser step on the training
device, per memory option (optimizer, gradient checkpointing, mixed precision), at a profile's own resolution
and per-process batch.

On a CUDA GPU (`bench/run.py --device cuda`) the models are SD-v1-sized (random weights, built on the GPU) and
the settings are the paper profile's (params.yaml: 512 px, 4 images per process in stage 1, 2 in stage 2), so
the figure answers issue 27's question: does stage 1 at the authors' per-process batch fit a 24 GB card? The
value is `torch.cuda.max_memory_allocated` over the whole step: the frozen models in the option's dtype (as the
training loop loads them), ELITE's fp32 weights, gradients, optimiser state and activations. On the CPU the
same code runs the smoke models at the smoke profile's settings and reads the process's peak RSS (VmHWM): the
code path, not a figure for a card.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.measure import figure, headline, peak_rss_mib, reset_peak
from bench.models import sd_modules, train_manifest
from bench.settings import Settings

GIB = 2**30
TARGET_GIB = 24.0  # issue 27: stage 1 at the authors' per-process batch on a 24 GB card
OPTIONS = {  # name -> (optimizer, gradient_checkpointing, mixed_precision: params of the training stages, attention)
    "fp32, AdamW": ("adamw", False, "no", "sdpa"),
    "fp32, AdamW, the authors' attention (no SDPA)": ("adamw", False, "no", "classic"),
    "gradient checkpointing": ("adamw", True, "no", "sdpa"),
    "bf16": ("adamw", False, "bf16", "sdpa"),
    "fp16": ("adamw", False, "fp16", "sdpa"),
    "checkpointing + bf16": ("adamw", True, "bf16", "sdpa"),
    "8-bit AdamW": ("adamw8bit", False, "no", "sdpa"),
    "checkpointing + bf16 + 8-bit AdamW": ("adamw8bit", True, "bf16", "sdpa"),
}


@dataclass(frozen=True)
class Setup:
    """What every option's run shares: the model size, where the smoke models are, the seed, params.yaml's
    `models` section (the mappers' feature layers), the device and the steps per option."""

    size: str
    smoke_root: Path
    seed: int
    models: object
    device: torch.device
    steps: int


@dataclass
class Peak:
    """Peak memory since `start`: CUDA's allocator on a GPU, the process's VmHWM on the CPU."""

    device: torch.device

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            reset_peak()

    def now_gib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / GIB
        return peak_rss_mib() / 1024

    def peak_gib(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / GIB
        return peak_rss_mib() / 1024


def _models(setup: Setup, resolution: int, dtype: torch.dtype):
    """(frozen models in `dtype` on `device`, ELITE's starting weights): the smoke models as the training
    stages load them, or SD-v1-sized random ones built on the device (a GPU builds them in a second)."""
    from diffusers import DDPMScheduler
    from transformers import CLIPImageProcessor, CLIPTokenizer

    from elite.models.elite_model import EliteModel
    from elite.train.stages import Frozen, load_frozen

    root, m = setup.smoke_root, setup.models
    if setup.size == "smoke":
        init = EliteModel.from_pretrained(root / "elite")
        return load_frozen(str(root / "base"), str(root / "image_encoder"), setup.device, dtype), init
    with torch.device(setup.device):
        unet, vae, text_encoder, tower = sd_modules(resolution, setup.seed)
        init = EliteModel.from_models(
            unet, tower, text_dim=text_encoder.config.hidden_size, image_encoder_name="random-vit-l14-sized",
            feature_layers=m.feature_layers, reference_depth=m.reference_depth, seed=setup.seed + 4,
        )  # fmt: skip
    for model in (unet, vae, text_encoder, tower):
        model.requires_grad_(False).eval().to(dtype)
    frozen = Frozen.in_memory(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(root / "base", subfolder="tokenizer"),
        unet=unet,
        image_encoder=tower,
        image_processor=CLIPImageProcessor.from_pretrained(root / "image_encoder"),
        noise_scheduler=DDPMScheduler.from_pretrained(root / "base", subfolder="scheduler"),
    )
    return frozen, init


def option_step(stage_class, setup: Setup, cfg, option: tuple) -> dict:
    """Fresh models for one option (`attention` "classic": diffusers' AttnProcessor on self-attention, as the
    authors' diffusers-0.11 code ran it; "sdpa": the processors this project installs), then `steps` optimiser
    steps (the first creates the optimiser state): the peak over them, the memory resident before the first,
    and the median time of the later steps."""
    from diffusers.models.attention_processor import AttnProcessor

    from elite.train.data import ClipSpec, collate, read_manifest
    from elite.train.loop import DTYPES
    from elite.train.memory import checkpoint_unet, make_optimizer

    optimizer_name, checkpointing, precision, attention = option
    cfg = cfg.model_copy(update={"optimizer": optimizer_name, "gradient_checkpointing": checkpointing})
    device, dtype, peak = setup.device, DTYPES[precision], Peak(setup.device)
    frozen, init = _models(setup, cfg.resolution, dtype)
    stage = stage_class(cfg)
    elite = stage.build(init, frozen).to(device)
    elite.attach(frozen.unet, use_local=stage.need_mask)
    if attention == "classic":  # the authors' self-attention: scores materialised (baddbmm, softmax, bmm)
        procs = frozen.unet.attn_processors
        frozen.unet.set_attn_processor({n: AttnProcessor() if ".attn1." in n else p for n, p in procs.items()})
    module = stage.module_class(elite, frozen, cfg).train()
    trainable = [p for p in elite.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, trainable, cfg.learning_rate, stage.name)
    checkpoint_unet(frozen.unet, checkpointing)
    dataset = stage.dataset(read_manifest(cfg.manifest, stage.need_mask), frozen, ClipSpec(frozen.image_processor))
    batches = [collate([dataset[(i * cfg.batch_size + j) % len(dataset)] for j in range(cfg.batch_size)])
               for i in range(setup.steps)]  # fmt: skip
    del init
    peak.start()  # the peak of the steps, over the models resident now (not the transient of building them)
    resident = peak.now_gib()
    seconds = []
    for batch in batches:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=precision != "no"):
            loss = module(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - t0)
    out = {
        "peak_gib": round(peak.peak_gib(), 3),
        "resident_before_first_step_gib": round(resident, 3),
        "median_step_s": round(statistics.median(seconds[1:] or seconds), 4),
        "final_loss": float(loss.detach().float()),
        "trainable_params_m": round(sum(p.numel() for p in trainable) / 1e6, 2),
    }
    return out


def device_memory(smoke_root: Path, work: Path, settings: Settings, device: torch.device) -> dict:
    """Both training stages, every option (8-bit AdamW where bitsandbytes imports and the device is a GPU)."""
    import importlib.util

    from elite.config import load_params
    from elite.train.stages import GlobalStage, LocalStage

    repo = Path(__file__).resolve().parents[1]
    gpu = device.type == "cuda"
    size, profile = ("sd", "paper") if gpu else ("smoke", "smoke")
    params = load_params(repo / "params.yaml", profile=profile)
    manifest = train_manifest(work / f"device_memory_{size}", settings.device_memory_rows, settings.seed, masks=True)
    bnb = gpu and importlib.util.find_spec("bitsandbytes") is not None
    setup = Setup(size, smoke_root, settings.seed, params.models, device, settings.device_memory_steps)
    options = {k: v for k, v in OPTIONS.items() if (v[0] != "adamw8bit" or bnb) and (gpu or v[2] != "fp16")}
    stages, heads = {}, []
    for stage_class, section in ((GlobalStage, params.train_global), (LocalStage, params.train_local)):
        cfg = section.model_copy(update={"manifest": str(manifest), "cache_latents": False, "sample_every": 0})
        rows = {}
        for name, option in options.items():
            rows[name] = option_step(stage_class, setup, cfg, option)
            print(f"[bench] device_memory {stage_class.name} {name}: {rows[name]}", flush=True)
        stages[stage_class.name] = {"resolution": cfg.resolution, "batch_size": cfg.batch_size, "options": rows}
        targeted = gpu and stage_class is GlobalStage  # the 24 GB target is stage 1's, on a card
        target = f"< {TARGET_GIB:g} GiB" if targeted else "report"
        for name, row in rows.items():
            met = (row["peak_gib"] < TARGET_GIB) if targeted else None
            label = f"{stage_class.name} at batch {cfg.batch_size}, {cfg.resolution} px: peak, {name}"
            heads.append(headline(size, label, row["peak_gib"] * 1024, "MiB", target, met, wall=None))
    sizes = {
        size: {
            "device": torch.cuda.get_device_name(device) if gpu else "cpu",
            "profile": profile,
            "bitsandbytes": bnb,
            "steps_per_option": settings.device_memory_steps,
            **stages,
        }
    }
    how = (
        f"per option, fresh models ({'SD-v1-sized random weights built on the GPU' if gpu else 'the smoke models'})"
        f" with the frozen ones in the option's dtype, then {settings.device_memory_steps} optimiser steps of the "
        f"stage's own module on the {profile} profile's resolution and per-process batch (VAE encoding in the "
        "step: no latent cache); value = "
        + ("torch.cuda.max_memory_allocated over the steps (models, gradients, optimiser state, activations)"
           if gpu else "the process's peak RSS over the steps (CPU: the code path, not a card's figure)")
        + ("" if bnb else "; 8-bit AdamW: not measured (needs bitsandbytes and a GPU)")
    )  # fmt: skip
    return figure("device_memory", how, sizes, heads)

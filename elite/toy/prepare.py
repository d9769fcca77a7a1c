"""prepare_models for the toy profile: train every stand-in on the toy world and save it in the real layout.

`models.dir` gets the same folders as in the paper profile, loaded by the same `from_pretrained` calls:
base/ (Stable Diffusion layout: tokenizer, CLIP text encoder, VAE, UNet, scheduler), image_encoder/ (CLIP
vision tower), clip_eval/ (the whole CLIP), dino_eval/ (a ViT trained self-supervised), sam/ (SAM fine-tuned
on box prompts), probes/ (the evaluation classifiers) and elite/ (fresh ELITE weights for this base).
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
from diffusers import LMSDiscreteScheduler
from tqdm import tqdm
from transformers import CLIPTextModel, CLIPVisionModel

from elite.config import Params
from elite.errors import EliteError
from elite.io import atomic_dir, write_json
from elite.model_configs import clip_processor
from elite.smoke_models import init_elite_weights, save_sd_folder, write_clip_tokenizer
from elite.toy import standins
from elite.toy.bank import make_bank
from elite.toy.dino import train_dino
from elite.toy.heldout import held_out_concepts, held_out_identities
from elite.toy.probes import save_probes, train_probe
from elite.toy.sam_tune import finetune_sam

MAX_TOKENS = 20  # the toy captions are short; the text tower's positions and the tokenizer's max length


def _bar(name: str, total: int):
    bar = tqdm(total=total, desc=name, unit="step", mininterval=2.0)

    def progress(step: int, loss: float) -> None:
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.4f}")
        if step == total - 1:
            bar.close()

    return progress


def _tokenizer():
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = write_clip_tokenizer(Path(tmp))
    tokenizer.model_max_length = MAX_TOKENS
    return tokenizer


def _bank(params: Params, offset: int = 0, two_object_share: float | None = None):
    """The renders a stand-in trains on: never one with a held-out identity (elite/toy/heldout.py)."""
    cfg = params.toy
    share = cfg.two_object_share if two_object_share is None else two_object_share
    return make_bank(cfg.bank, cfg.size, cfg.seed + offset, share, exclude=held_out_identities(cfg.held_out))


def prepare_vae(params: Params, out: Path) -> None:
    cfg = params.toy
    vae = standins.train_vae(
        standins.build_vae(cfg.size), _bank(params), cfg.vae_steps, cfg.seed, progress=_bar("VAE", cfg.vae_steps)
    )
    with atomic_dir(out / "_vae") as tmp:
        vae.save_pretrained(tmp)


def prepare_clip(params: Params, out: Path) -> None:
    """CLIP (contrastive, full captions) -> clip_eval/ (the whole model) and image_encoder/ (its vision tower)."""
    cfg, tokenizer = params.toy, _tokenizer()
    clip = standins.train_clip(
        standins.build_clip(cfg.size, MAX_TOKENS),
        tokenizer,
        _bank(params),
        cfg.clip_steps,
        cfg.seed + 1,
        progress=_bar("CLIP", cfg.clip_steps),
    )
    with atomic_dir(out / "clip_eval") as tmp:
        clip.save_pretrained(tmp)
        clip_processor(cfg.size).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    write_vision_tower(out, cfg.size)


def write_vision_tower(out: Path, size: int) -> None:
    """image_encoder/: the vision tower of clip_eval/ as a CLIPVisionModel (ELITE's image encoder)."""
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(out / "clip_eval")
    with atomic_dir(out / "image_encoder") as tmp:
        vision = CLIPVisionModel(clip.config.vision_config)
        vision.load_state_dict(clip.vision_model.state_dict())
        vision.save_pretrained(tmp)
        clip_processor(size).save_pretrained(tmp)


def prepare_base(params: Params, out: Path) -> None:
    """The UNet on the frozen CLIP text tower and VAE latents -> base/ (Stable Diffusion layout)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPModel

    cfg = params.toy
    vae = AutoencoderKL.from_pretrained(out / "_vae")
    vae.register_to_config(_name_or_path="vae")  # not the machine path it was loaded from
    clip = CLIPModel.from_pretrained(out / "clip_eval")
    text_encoder = CLIPTextModel(clip.config.text_config)
    text_encoder.load_state_dict(clip.text_model.state_dict())
    bank = _bank(params)
    latents = standins.encode_latents(vae, bank.images)
    tokenizer = _tokenizer()
    unet = standins.train_unet(
        standins.build_unet(
            cfg.size // 2,
            clip.config.text_config.hidden_size,
            top_attention=cfg.unet_top_attention,
        ),
        text_encoder.eval(),
        tokenizer,
        latents,
        bank,
        cfg.unet_steps,
        cfg.seed + 2,
        cfg.caption_modes,
        batch=cfg.unet_batch,
        lr=cfg.unet_lr,
        drop_p=cfg.caption_drop,
        template_p=cfg.template_p,
        scene_p=cfg.scene_p,
        snr_gamma=cfg.unet_snr_gamma,
        progress=_bar("UNet", cfg.unet_steps),
    )
    scheduler = LMSDiscreteScheduler.from_config(standins.build_scheduler().config)
    with atomic_dir(out / "base") as tmp:
        save_sd_folder(Path(tmp), vae, text_encoder, tokenizer, unet, scheduler)
        (Path(tmp) / "toy_world.json").write_text(json.dumps(cfg.model_dump(), indent=2) + "\n")


def prepare_evaluators(params: Params, out: Path) -> None:
    """dino_eval/ (self-supervised ViT), sam/ (SAM fine-tuned on boxes), probes/ (identity and scene)."""
    cfg = params.toy
    bank = _bank(params)
    with atomic_dir(out / "dino_eval") as tmp:
        train_dino(bank, cfg.dino_steps, cfg.seed + 3, Path(tmp), progress=_bar("DINO", cfg.dino_steps))
    with atomic_dir(out / "sam") as tmp:
        finetune_sam(bank, cfg.sam_steps, cfg.seed + 4, Path(tmp), progress=_bar("SAM", cfg.sam_steps))
    probes_bank = _bank(params, offset=5, two_object_share=0.0)
    with atomic_dir(out / "probes") as tmp:
        identity = train_probe(
            probes_bank,
            ["colour", "pattern", "cls"],
            cfg.probe_steps,
            cfg.seed + 6,
            progress=_bar("identity probe", cfg.probe_steps),
        )
        scene = train_probe(
            probes_bank,
            ["scene"],
            cfg.probe_steps // 2,
            cfg.seed + 7,
            progress=_bar("scene probe", cfg.probe_steps // 2),
        )
        save_probes(Path(tmp), identity=identity, scene=scene)


PARTS = {"vae": prepare_vae, "clip": prepare_clip, "base": prepare_base, "evaluators": prepare_evaluators}
# Two lanes that run side by side on a 2-core machine, each part in order within its lane: base needs the
# VAE (lane 2, done long before CLIP is) and CLIP (lane 1).
LANES = (("clip", "base"), ("vae", "evaluators"))


FAILED = "_lane_failed"  # written by a lane whose part raised, so that the other lane stops waiting for it


def _run_parts(params: Params, out: Path, names: list[str], wait_for: Path | None = None) -> None:
    """The parts `names` in order, each on `toy.threads` threads with the torch seed reset (so a part's result
    does not depend on what ran before it in the same process). In a lane (`wait_for`: the other lane's VAE
    folder, which base needs) a part that raises leaves `out/_lane_failed` behind before the error goes on."""
    torch.set_num_threads(params.toy.threads)
    try:
        for name in names:
            if name == "base" and wait_for is not None:
                _wait_for(wait_for, out / FAILED)
            torch.manual_seed(params.toy.seed)
            PARTS[name](params, out)
    except BaseException as exc:
        if wait_for is not None:
            (out / FAILED).write_text(f"{', '.join(names)}: {type(exc).__name__}: {exc}\n")
        raise


def _wait_for(folder: Path, failed: Path) -> None:
    """Until `folder` appears (atomic: whole), or the other lane says it failed (then a one-line error)."""
    while not folder.is_dir():
        if failed.is_file():
            raise EliteError(f"prepare_models: the other lane failed ({failed.read_text().strip()})")
        time.sleep(2)


def prepare_toy(params: Params, out: Path, parts: list[str] | None = None, lanes: int = 2) -> None:
    """Every part (base needs vae and clip), in two processes when `lanes` is 2, then fresh ELITE weights for the
    new base and the base gate. `parts` runs just those, in order, in this process. In two lanes the first
    error is raised as soon as its lane ends (the other lane finishes its part or stops at its wait)."""
    if parts is not None:
        _run_parts(params, out, parts)
        return _finish(params, out, parts)
    shutil.rmtree(out / "_vae", ignore_errors=True)  # never a VAE left by a run that was stopped
    (out / FAILED).unlink(missing_ok=True)
    if lanes == 1:
        _run_parts(params, out, list(PARTS))
    else:
        ctx = multiprocessing.get_context("spawn")
        out.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(2, mp_context=ctx) as pool:
            futures = [pool.submit(_run_parts, params, out, list(lane), out / "_vae") for lane in LANES]
            for future in as_completed(futures):
                future.result()
    _finish(params, out, None)


def _finish(params: Params, out: Path, parts: list[str] | None) -> None:
    """After the base: fresh ELITE weights for it, and the base gate once the probes exist too."""
    torch.set_num_threads(params.toy.threads)
    if parts is None or "base" in parts:
        shutil.rmtree(out / "_vae", ignore_errors=True)  # the VAE lives on inside base/
        with atomic_dir(out / "elite") as tmp:
            init_elite_weights(
                out / "base",
                out / "image_encoder",
                tmp,
                params.toy.seed + 8,
                params.models.feature_layers,
                params.models.reference_depth,
            )
    if (out / "base").is_dir() and (out / "probes" / "probes.json").is_file():
        from elite.toy.gate import measure_base

        cfg = params.toy
        gate = measure_base(out, held_out_concepts(cfg.held_out), cfg.gate_guidance, cfg.gate_steps, cfg.gate_images)
        write_json(out / "base" / "toy_gate.json", gate)
        print("base model gate (identity named in the prompt):", json.dumps(gate))

"""Inference figures: concept encode latency, ELITE generation vs StableDiffusionPipeline, and our
sampling step vs the authors' style."""

from __future__ import annotations

import torch
from diffusers import LMSDiscreteScheduler
from diffusers.models.attention_processor import AttnProcessor2_0
from PIL import Image

from bench.classic import batched_step, classic_processors, two_call_step
from bench.measure import figure, headline, interleaved, median_time, ratio, ratio_headline, time_headline
from bench.models import Models
from bench.settings import Settings
from elite.models.attention import EliteConditioning
from elite.models.text import tokenize_plain
from elite.pipeline import Concept


def plain_processors(unet) -> dict:
    """diffusers' default on torch 2 (SDPA) in every attention layer: plain Stable Diffusion."""
    return {name: AttnProcessor2_0() for name in unet.attn_processors}


def installer(unet, procs: dict):
    return lambda: unet.set_attn_processor(dict(procs))


def encode_latency(
    models: dict[str, Models], settings: Settings, image: Image.Image, mask: Image.Image
) -> tuple[dict, dict]:
    """Median of `encode_repeats` calls of ElitePipeline.encode_concept (image + mask, batch 1): CLIP
    preprocessing, the vision tower on the image and on the masked object, both mappers."""
    sizes, concepts, heads = {}, {}, []
    for name, m in models.items():
        pipe = m.elite_pipeline()
        samples = median_time(lambda: pipe.encode_concept(image, mask), settings.encode_repeats)
        concepts[name] = samples.last
        cfg = m.image_encoder.config
        sizes[name] = {
            **samples.summary(),
            "tower": {
                "hidden": cfg.hidden_size,
                "layers": cfg.num_hidden_layers,
                "heads": cfg.num_attention_heads,
                "patch": cfg.patch_size,
                "image_size": cfg.image_size,
            },
            "tower_params_m": round(sum(p.numel() for p in m.image_encoder.parameters()) / 1e6, 1),
            "mapper_params_m": round(sum(p.numel() for p in m.elite.parameters()) / 1e6, 1),
        }
        heads.append(time_headline(name, "encode_concept median", sizes[name], "report (paper: 0.05 s on a V100)"))
    how = (
        f"median of {settings.encode_repeats} ElitePipeline.encode_concept(image, mask) calls after "
        "one warm-up, batch 1, "
        "PIL inputs (CLIP preprocessing included), the vision tower on the image and on the masked "
        "object, both mappers"
    )
    return figure("encode", how, sizes, heads), concepts


def generation(models: dict[str, Models], concepts: dict[str, Concept], settings: Settings) -> dict:
    """StableDiffusionPipeline vs ElitePipeline (lam 0 and lam > 0) on the same UNet, VAE, text
    encoder, LMS sampler, steps, guidance and resolution, interleaved rounds."""
    sizes, heads = {}, []
    for name, m in models.items():
        elite = m.elite_pipeline()
        elite_procs = dict(m.unet.attn_processors)
        sd = m.sd_pipeline()
        res, steps, g = m.resolution, settings.gen_steps[name], settings.guidance
        sd_prompt = settings.prompt.replace("S*", "dog")

        def gen(pipe, **kw):
            return lambda: (
                pipe(
                    num_inference_steps=steps,
                    guidance_scale=g,
                    height=res,
                    width=res,
                    generator=torch.Generator().manual_seed(settings.seed),
                    **kw,
                ).images
            )

        configs = {
            "sd": (installer(m.unet, plain_processors(m.unet)), gen(sd, prompt=sd_prompt)),
            "elite_lam0": (
                installer(m.unet, elite_procs),
                gen(elite, prompt=settings.prompt, concept=concepts[name], lam=0.0),
            ),
            "elite_lam": (
                installer(m.unet, elite_procs),
                gen(elite, prompt=settings.prompt, concept=concepts[name], lam=settings.lam),
            ),
        }
        samples = interleaved(configs, settings.gen_rounds[name], warmup=1 if name == "smoke" else 0)
        r0, r1 = ratio(samples, "elite_lam0", "sd"), ratio(samples, "elite_lam", "sd")
        sizes[name] = {
            "resolution": res,
            "steps": steps,
            "guidance": g,
            "sampler": "lms",
            "prompt": settings.prompt,
            "sd_prompt": sd_prompt,
            "rounds": settings.gen_rounds[name],
            **{k: s.summary() for k, s in samples.items()},
            "ratio_lam0_vs_sd": r0,
            f"ratio_lam{settings.lam}_vs_sd": r1,
            "image_size": list(samples["elite_lam"].last[0].size),
        }
        heads.append(ratio_headline(name, "ELITE lam=0 / SD", r0, "<= 1.10", lambda v: v <= 1.10))
        heads.append(ratio_headline(name, f"ELITE lam={settings.lam} / SD", r1, "<= 1.10", lambda v: v <= 1.10))
        for key, label in (("sd", "SD"), ("elite_lam", f"ELITE lam={settings.lam}")):
            heads.append(headline(name, f"generation peak RSS, {label}", sizes[name][key]["peak_rss_mib"], "MiB"))
    how = (
        "whole pipeline calls (text encoding, LMS sampling loop with classifier-free guidance, VAE decode (at the sd "
        "size with the smoke VAE, see bench/README.md), PIL output) on shared modules; SD runs with "
        "diffusers' default "
        "SDPA processors, ELITE with its own on the 16 "
        "cross-attention layers (swapped untimed before each call); interleaved rounds"
    )
    return figure("generation", how, sizes, heads)


def sampling_step(models: dict[str, Models], concepts: dict[str, Concept], settings: Settings) -> dict:
    """One classifier-free-guidance step (UNet part: scale_model_input, UNet, guidance): ours (one
    batched call, SDPA) vs the authors' style (two calls, classic attention), plus a plain SD step."""
    sizes, heads = {}, []
    for name, m in models.items():
        pipe = m.elite_pipeline()
        elite_procs = dict(m.unet.attn_processors)
        concept, g = concepts[name], settings.guidance
        with torch.no_grad():
            text, slots = pipe.encode_prompts([settings.prompt], concept)
            uncond = pipe.text_encoder(tokenize_plain(pipe.tokenizer, [""])).last_hidden_state
            plain_text = pipe.text_encoder(
                tokenize_plain(pipe.tokenizer, [settings.prompt.replace("S*", "dog")])
            ).last_hidden_state
        lam = torch.tensor([settings.lam])
        both = EliteConditioning(
            text=torch.cat([uncond, text]),
            local_tokens=concept.local_tokens.expand(2, -1, -1),
            local_scale=torch.cat([torch.zeros(1), lam]),
            word_index=torch.cat([torch.zeros_like(slots), slots]),
        )
        cond = EliteConditioning(text=text, local_tokens=concept.local_tokens, local_scale=lam, word_index=slots)
        sched = LMSDiscreteScheduler.from_config(m.scheduler_config)
        sched.set_timesteps(settings.gen_steps[name])
        t = sched.timesteps[0]
        lat = m.resolution // 8
        latents = torch.randn((1, m.unet.config.in_channels, lat, lat), generator=torch.Generator().manual_seed(0))
        latents = latents * sched.init_noise_sigma

        def no_grad(fn):
            def call():
                with torch.no_grad():
                    return fn()

            return call

        configs = {
            "ours": (
                installer(m.unet, elite_procs),
                no_grad(lambda: batched_step(m.unet, sched, latents, t, both, g)),
            ),
            "authors": (
                installer(m.unet, classic_processors(m.unet, m.elite)),
                no_grad(lambda: two_call_step(m.unet, sched, latents, t, EliteConditioning(text=uncond), cond, g)),
            ),
            "plain_sd": (
                installer(m.unet, plain_processors(m.unet)),
                no_grad(lambda: batched_step(m.unet, sched, latents, t, torch.cat([uncond, plain_text]), g)),
            ),
        }
        samples = interleaved(configs, settings.step_rounds[name], warmup=1 if name == "smoke" else 0)
        installer(m.unet, elite_procs)()
        speedup = ratio(samples, "authors", "ours")
        overhead = ratio(samples, "ours", "plain_sd")
        ours, theirs = samples["ours"].last, samples["authors"].last
        diff = float((ours - theirs).abs().max())
        sizes[name] = {
            "resolution": m.resolution,
            "lam": settings.lam,
            "rounds": settings.step_rounds[name],
            **{k: s.summary() for k, s in samples.items()},
            "speedup_ours_vs_authors": speedup,
            "ratio_ours_vs_plain_sd": overhead,
            "max_abs_diff_ours_vs_authors": diff,
            "max_abs_noise": float(ours.abs().max()),
        }
        heads.append(ratio_headline(name, "authors' step / our step", speedup, "report the speed-up"))
        heads.append(ratio_headline(name, f"our ELITE step (lam={settings.lam}) / plain SD step", overhead))
    how = (
        "one guidance step, UNet part only (scale_model_input, UNet, guidance combination; the scheduler update is "
        "the same for all and left out). ours: ELITE processors, both halves in one batched call, SDPA. authors: two "
        "batch-1 calls (uncond, cond), diffusers' classic AttnProcessor on self-attention and "
        "bench.classic.ClassicEliteCrossAttn (baddbmm + softmax + bmm, heads in the batch) on cross-attention. "
        "plain_sd: the same batched step with SD's own K/V and SDPA everywhere. Both ELITE variants give the same "
        "noise (max_abs_diff)"
    )
    return figure("step", how, sizes, heads)

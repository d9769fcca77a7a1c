"""ELITE on diffusers' img2img, inpainting and ControlNet pipelines (elite.pipelines), on the smoke models: the
concept changes the images, a seed repeats them, unloading gives back the pipeline's own images bit for bit, and
each pipeline's own input (the init image and strength, the mask, the control image) is still used."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, LMSDiscreteScheduler, StableDiffusionPipeline
from PIL import Image

from elite.errors import EliteError
from elite.models.elite_model import EliteModel
from elite.pipelines import (
    EliteStableDiffusionControlNetPipeline,
    EliteStableDiffusionImg2ImgPipeline,
    EliteStableDiffusionInpaintPipeline,
)

STEPS = 4
SIZE = 64  # the smoke models' resolution: 8x8 latents
PROMPT = "a S* on the beach"
KINDS = ("img2img", "inpaint", "controlnet")


def _picture(seed: int) -> Image.Image:
    """A smooth colour field with a little noise: the scene."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    rgb = np.stack([np.sin(6 * xx + seed), np.cos(5 * yy - seed), np.sin(4 * (xx + yy))], -1) * 0.4 + 0.5
    rgb += rng.normal(0, 0.03, rgb.shape)
    return Image.fromarray((rgb.clip(0, 1) * 255).astype("uint8"))


def _mask() -> np.ndarray:
    """White = repaint: a centred 32x32 square on the 8-pixel latent grid (latents 2..5 of 8)."""
    mask = np.zeros((SIZE, SIZE), bool)
    mask[16:48, 16:48] = True
    return mask


def _concept_image() -> Image.Image:
    return Image.fromarray((np.random.default_rng(3).random((SIZE, SIZE, 3)) * 255).astype("uint8"))


def _controlnet(unet) -> ControlNetModel:
    """A ControlNet copied from the smoke UNet, as diffusers makes one to train; it is given seeded random weights
    where training would put them: its zero convolutions (torch's default initialisation) and its control-image
    encoder (He initialisation, its output scaled as below). A fresh one adds zeros."""
    controlnet = ControlNetModel.from_unet(unet)
    torch.manual_seed(7)
    for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
        conv.reset_parameters()
    embedding = controlnet.controlnet_cond_embedding
    for conv in [embedding.conv_in, *embedding.blocks, embedding.conv_out]:
        torch.nn.init.kaiming_normal_(conv.weight)
    with torch.no_grad():  # SiLU halves the signal at each layer: its output std ~0.03 -> ~0.3, the order of the
        embedding.conv_out.weight.mul_(10.0)  # UNet's first features (~0.5) to which a trained one adds it
    return controlnet


@pytest.fixture(scope="module")
def pipes(smoke_models):
    """The three ELITE pipelines made with `from_pipe` from one plain StableDiffusionPipeline (LMS)."""
    sd = StableDiffusionPipeline.from_pretrained(
        smoke_models / "base", safety_checker=None, requires_safety_checker=False
    )
    sd.scheduler = LMSDiscreteScheduler.from_config(sd.scheduler.config)
    made = {
        "img2img": EliteStableDiffusionImg2ImgPipeline.from_pipe(sd),
        "inpaint": EliteStableDiffusionInpaintPipeline.from_pipe(sd),
        "controlnet": EliteStableDiffusionControlNetPipeline.from_pipe(sd, controlnet=_controlnet(sd.unet)),
    }
    for pipe in made.values():
        pipe.set_progress_bar_config(disable=True)
    return made


@pytest.fixture
def elite_model(smoke_models) -> EliteModel:
    """The smoke ELITE with its global K/V scaled (they start as copies of the UNet's), so that loading it
    changes the plain images too and the unload check means something."""
    model = EliteModel.from_pretrained(smoke_models / "elite")
    with torch.no_grad():
        for weight in model.global_kv.parameters():
            weight.mul_(1.5)
    return model


def _edges(square: bool) -> Image.Image:
    """A control image as edge detectors give them: white outlines on black (a square's, or a cross)."""
    edges = np.zeros((SIZE, SIZE), np.uint8)
    if square:
        edges[12:52, [12, 51]] = edges[[12, 51], 12:52] = 255
    else:
        edges[SIZE // 2, :] = edges[:, SIZE // 2] = 255
    return Image.fromarray(edges).convert("RGB")


def _inputs(kind: str) -> dict:
    if kind == "img2img":
        return {"image": _picture(5), "strength": 0.75}
    if kind == "inpaint":
        return {"image": _picture(5), "mask_image": Image.fromarray(_mask().astype("uint8") * 255)}
    return {"image": _edges(square=True)}


def _run(pipe, kind, prompt=PROMPT, seed=1, output_type="np", **kw) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    kw = _inputs(kind) | kw
    return pipe(prompt, num_inference_steps=STEPS, generator=generator, output_type=output_type, **kw).images


@pytest.fixture
def loaded(pipes, elite_model, smoke_models):
    """`loaded(kind)`: that pipeline with ELITE loaded (the three share one UNet: one at a time) and a concept
    it encoded; unloaded after the test."""
    done = []

    def load(kind: str):
        pipe = pipes[kind]
        pipe.load_elite(elite_model, image_encoder=smoke_models / "image_encoder")
        done.append(pipe)
        return pipe, pipe.encode_concept(_concept_image())

    yield load
    for pipe in done:
        pipe.unload_elite()


@pytest.mark.parametrize("kind", KINDS)
def test_concept_changes_repeats_and_unloads_exactly(pipes, elite_model, smoke_models, kind):
    pipe = pipes[kind]
    own = _run(pipe, kind)
    pipe.load_elite(elite_model, image_encoder=smoke_models / "image_encoder")
    try:
        concept = pipe.encode_concept(_concept_image())
        with_concept = _run(pipe, kind, concept=concept)
        assert np.array_equal(with_concept, _run(pipe, kind, concept=concept))  # a seed repeats the images
        without = _run(pipe, kind)
        assert not np.array_equal(without, own)  # ELITE's K/V answer the plain prompt
        assert np.abs(with_concept - without).mean() > 1e-3  # the concept is used
    finally:
        pipe.unload_elite()
    assert pipe.elite_loaded is None
    assert np.array_equal(_run(pipe, kind), own)  # the pipeline's own images back, bit for bit


def test_img2img_uses_the_local_branch(loaded):
    pipe, concept = loaded("img2img")
    global_only = _run(pipe, "img2img", concept=concept, lam=0.0)
    local = _run(pipe, "img2img", concept=concept, lam=0.8)
    assert np.abs(global_only - local).mean() > 1e-4
    # the init image and strength are used: another strength, other images
    assert not np.array_equal(local, _run(pipe, "img2img", concept=concept, strength=1.0))


def test_controlnet_uses_the_control_image(loaded):
    pipe, concept = loaded("controlnet")
    first = _run(pipe, "controlnet", concept=concept)
    second = _run(pipe, "controlnet", concept=concept, image=_edges(square=False))
    off = _run(pipe, "controlnet", concept=concept, controlnet_conditioning_scale=0.0)
    square_vs_cross, on_vs_off = np.abs(first - second).mean(), np.abs(first - off).mean()
    print(f"ControlNet: mean |change| square vs cross {square_vs_cross:.5f}, on vs off {on_vs_off:.5f}")
    assert square_vs_cross > 1e-3 and on_vs_off > 1e-3  # seeded runs repeat bit for bit: any change is the input


def _outside_change(images: np.ndarray, scene: np.ndarray, outside: np.ndarray) -> float:
    return float(np.abs(images[0] - scene)[outside].mean())


def test_inpainting_keeps_the_outside(pipes, elite_model, smoke_models):
    pipe = pipes["inpaint"]
    scene, outside = np.asarray(_picture(5), np.float32) / 255, ~_mask()
    plain_latents = _run(pipe, "inpaint", prompt="a ball on the beach", output_type="latent")
    plain = _run(pipe, "inpaint", prompt="a ball on the beach")
    pipe.load_elite(elite_model, image_encoder=smoke_models / "image_encoder")
    try:
        concept = pipe.encode_concept(_concept_image())
        latents = _run(pipe, "inpaint", concept=concept, output_type="latent")
        elite = _run(pipe, "inpaint", concept=concept)
    finally:
        pipe.unload_elite()
    # latents: outside the mask (on the latent grid) diffusers puts back the scene's own, with or without ELITE
    latent_mask = torch.from_numpy(_mask()[4::8, 4::8])
    assert torch.equal(latents[..., ~latent_mask], plain_latents[..., ~latent_mask])
    assert not torch.equal(latents[..., latent_mask], plain_latents[..., latent_mask])
    # pixels: the smoke VAE (random weights) does not give the scene back (its round trip alone moves the outside a
    # lot), and its decoder (convolutions across the mask's edge, attention over all latents) lets the inside reach
    # the outside. The margin is that reach, measured: how far the outside moves when plain inpainting repaints the
    # inside with another seed. ELITE may move the outside no more than plain inpainting does, plus that reach.
    other_seed = _run(pipe, "inpaint", prompt="a ball on the beach", seed=2)
    reach = float(np.abs(other_seed[0] - plain[0])[outside].mean())
    elite_out = float(np.abs(elite[0] - scene)[outside].mean())
    plain_out = float(np.abs(plain[0] - scene)[outside].mean())
    between = float(np.abs(elite[0] - plain[0])[outside].mean())
    inside = float(np.abs(elite[0] - plain[0])[~outside].mean())
    print(
        f"outside-mask mean |change|: ELITE {elite_out:.4f}, plain {plain_out:.4f}, ELITE vs plain {between:.4f}, "
        f"plain seed 1 vs 2 {reach:.4f}; inside ELITE vs plain {inside:.4f}"
    )
    assert elite_out <= plain_out + reach
    assert between <= reach  # what ELITE changes outside is no more than what another seed changes


@pytest.mark.parametrize("kind", KINDS)
def test_concept_with_positional_inputs_or_embeds_is_one_line_error(loaded, kind):
    (pipe, concept), inputs = loaded(kind), _inputs(kind)
    with pytest.raises(EliteError, match="keyword options only") as positional:
        pipe(PROMPT, inputs.pop("image"), concept=concept, num_inference_steps=1, **inputs)
    with pytest.raises(EliteError, match="not prompt_embeds") as embeds:
        pipe(PROMPT, concept=concept, prompt_embeds=torch.zeros(1, 77, 32), num_inference_steps=1, **_inputs(kind))
    assert "\n" not in str(positional.value) and "\n" not in str(embeds.value)


def test_pipelines_sharing_a_unet_load_elite_one_at_a_time(pipes, elite_model, smoke_models):
    # from_pipe shares the UNet: a second load would stack ELITE on ELITE, and unloading would not restore it
    first, second = pipes["img2img"], pipes["inpaint"]
    before = dict(second.unet.attn_processors)
    first.load_elite(elite_model, image_encoder=smoke_models / "image_encoder")
    try:
        with pytest.raises(EliteError, match="sharing it") as err:
            second.load_elite(elite_model, image_encoder=smoke_models / "image_encoder")
        assert "\n" not in str(err.value) and second.elite_loaded is None
    finally:
        first.unload_elite()
    assert all(second.unet.attn_processors[k] is before[k] for k in before)
    second.load_elite(elite_model, image_encoder=smoke_models / "image_encoder")  # now it may
    second.unload_elite()


def test_the_package_exports_the_pipelines():
    import elite
    from elite import pipelines

    for name in pipelines.__all__:
        assert getattr(elite, name) is getattr(pipelines, name) and name in elite.__all__

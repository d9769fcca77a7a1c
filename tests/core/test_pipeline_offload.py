"""CPU offload of ElitePipeline: the same images with diffusers' `enable_model_cpu_offload()` and with
sequential offload as without, and ELITE's weights wherever the UNet and the mappers run.

On a machine without an accelerator the hooks still run for real: model offload with `device="cpu"`
installs accelerate's chain of `CpuOffload` hooks (and `maybe_free_model_hooks` re-installs it after
every call); sequential offload moves every weight to the meta device and loads it back into each
layer only for that layer's forward, so any weight used outside a module call would fail.
diffusers' `enable_sequential_cpu_offload(device="cpu")` executes on `cpu:0`, which accelerate 1.15
mishandles (a weight comes back as a plain tensor); `_sequential_offload` runs diffusers' own loop on
`cpu`. With a GPU, the last test runs both of diffusers' methods on it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import cpu_offload
from accelerate.hooks import CpuOffload
from PIL import Image

from elite.models.attention import EliteCrossAttnProcessor, cross_attention_layers
from elite.pipeline import ElitePipeline


def generate(pipe: ElitePipeline, concept_image, steps: int = 3) -> torch.Tensor:
    concept = pipe.encode_concept(concept_image, mask=concept_image.with_name("concept_mask.png"))
    return (
        pipe(
            ["a photo of a S*", "a S* on the beach"],
            concept=concept,
            lam=0.8,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        )
        .images.float()
        .cpu()
    )


def _sequential_offload(pipe: ElitePipeline, device: torch.device) -> None:
    """diffusers' enable_sequential_cpu_offload loop, executing on `device` as given."""
    for name, model in pipe.components.items():
        if not isinstance(model, torch.nn.Module):
            continue
        if name in pipe._exclude_from_cpu_offload:
            model.to(device)
        else:
            cpu_offload(model, device, offload_buffers=len(model._parameters) > 0)


def test_model_cpu_offload_gives_the_same_images(fresh, concept_image):
    reference = generate(fresh(), concept_image)
    pipe = fresh()
    pipe.enable_model_cpu_offload(device="cpu")
    hooked = {
        name for name, model in pipe.components.items() if isinstance(getattr(model, "_hf_hook", None), CpuOffload)
    }
    assert hooked == {"text_encoder", "image_encoder", "unet", "vae"}
    assert pipe._execution_device == torch.device("cpu", 0)
    # the same computation up to float rounding: the hooks copy every weight and input to `cpu:0`, and the CPU
    # kernels may then take other vector paths (measured: 1.1e-6 at most); a weight used off its device or the
    # wrong K/V would move the images by orders of magnitude more
    first = generate(pipe, concept_image)
    torch.testing.assert_close(first, reference, rtol=0, atol=1e-5)
    assert len(pipe._all_hooks) == 4  # maybe_free_model_hooks put the chain back for the next call
    torch.testing.assert_close(generate(pipe, concept_image), reference, rtol=0, atol=1e-5)


def test_sequential_offload_gives_the_same_images(fresh, concept_image):
    reference = generate(fresh(), concept_image)
    pipe = fresh()
    _sequential_offload(pipe, torch.device("cpu"))
    on_meta = {
        name
        for name, model in pipe.components.items()
        if isinstance(model, torch.nn.Module) and next(model.parameters()).device.type == "meta"
    }
    assert on_meta == {"text_encoder", "image_encoder", "unet", "vae"}
    assert torch.equal(generate(pipe, concept_image), reference)


def test_every_layer_the_unet_calls_moves_with_it(fresh):
    """What makes model offload place ELITE right: every K/V layer that a processor calls inside the UNet
    belongs to the UNet (moved by its hook) or to a component kept on the execution device; the
    mappers, called by encode_concept outside any hooked forward, are kept there too."""
    pipe = fresh()
    kept = [pipe.components[name] for name in pipe._exclude_from_cpu_offload]
    assert "elite" not in pipe.model_cpu_offload_seq.split("->")

    def owned(module: torch.nn.Module, owners) -> bool:
        return any(module is sub for owner in owners for sub in owner.modules())

    processors = [attn.processor for attn in cross_attention_layers(pipe.unet).values()]
    assert len(processors) == 16 and all(isinstance(p, EliteCrossAttnProcessor) for p in processors)
    called = [layer for p in processors for kv in (p.global_kv, p.local_kv) if kv is not None for layer in kv.values()]
    assert len(called) == 64
    for layer in called:
        assert owned(layer, [pipe.unet, *kept]), "a K/V layer the UNet calls would stay on the CPU"
    assert owned(pipe.global_mapper, kept) and owned(pipe.local_mapper, kept)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_offload_on_a_gpu(fresh, concept_image):
    reference = generate(fresh().to("cuda"), concept_image, steps=10)
    for enable in ("enable_model_cpu_offload", "enable_sequential_cpu_offload"):
        pipe = fresh()
        getattr(pipe, enable)()
        assert pipe._execution_device.type == "cuda"
        torch.testing.assert_close(generate(pipe, concept_image, steps=10), reference, rtol=0, atol=1e-3, msg=enable)
        assert pipe.elite.device.type == "cuda"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_loaded_pipeline_offload_on_a_gpu(smoke_models, concept_image):
    """`load_elite` on diffusers' own pipeline, moved with `.to("cuda")` and under enable_model_cpu_offload(): the
    same images. What load_elite installs (the CLIP tower, ELITE's mappers and K/V) is no pipeline component, so
    neither moves it; this failed with tensors on two devices before `LoadedElite.follow`."""
    from diffusers import StableDiffusionPipeline

    from elite.loader import EliteStableDiffusionPipeline

    def loaded() -> EliteStableDiffusionPipeline:
        sd = StableDiffusionPipeline.from_pretrained(
            smoke_models / "base", safety_checker=None, requires_safety_checker=False
        )
        pipe = EliteStableDiffusionPipeline.from_pipe(sd)
        pipe.set_progress_bar_config(disable=True)
        pipe.load_elite(smoke_models / "elite")
        return pipe

    def images(pipe) -> np.ndarray:
        concept = pipe.encode_concept(Image.open(concept_image).convert("RGB"))
        g = torch.Generator().manual_seed(0)
        return pipe("a S* on the beach", concept=concept, num_inference_steps=10, generator=g, output_type="np").images

    reference = images(loaded().to("cuda"))
    pipe = loaded()
    pipe.enable_model_cpu_offload()
    np.testing.assert_allclose(images(pipe), reference, rtol=0, atol=1e-3)

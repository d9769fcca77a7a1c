"""The contract tests of diffusers' PipelineTesterMixin that apply to ElitePipeline, written for it:
batch vs single, outputs as dict or tuple, components, dtype, save/load of one folder (with and without
the optional ELITE weights, in float32 and in a half dtype), the progress bar. (Callbacks, attention
slicing, VAE tiling and prompt embeddings as inputs are not part of ElitePipeline's API.)"""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from elite.errors import EliteError
from elite.pipeline import Concept, ElitePipeline

PROMPTS = ["a photo of a S*", "a S* on the beach"]


def run(pipe, concept, prompts=PROMPTS, seeds=(0, 1), **kw) -> torch.Tensor:
    kw = {"lam": 0.8, "num_inference_steps": 3, "output_type": "pt", **kw}
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(prompts, concept=concept, generator=gens if len(gens) > 1 else gens[0], **kw).images


def encode(pipe, concept_image):
    return pipe.encode_concept(concept_image, mask=concept_image.with_name("concept_mask.png"))


def test_inference_batch_single_identical(smoke_pipeline, concept_image):
    """Each image of a batch equals the image generated alone with its generator (the local term's max is
    per sample, so rows do not influence each other)."""
    concept = encode(smoke_pipeline, concept_image)
    batch = run(smoke_pipeline, concept)
    for i, prompt in enumerate(PROMPTS):
        torch.testing.assert_close(
            batch[i : i + 1], run(smoke_pipeline, concept, [prompt], seeds=(i,)), rtol=0, atol=1e-4
        )
    per_prompt = run(smoke_pipeline, concept, PROMPTS[:1], seeds=(0, 5), num_images_per_prompt=2)
    assert per_prompt.shape == (2, 3, 64, 64) and not torch.equal(per_prompt[0], per_prompt[1])
    torch.testing.assert_close(per_prompt[:1], batch[:1], rtol=0, atol=1e-4)
    with pytest.raises(EliteError, match="3 generators for 2 images"):
        run(smoke_pipeline, concept, seeds=(0, 1, 2))


def test_dict_and_tuple_outputs_equivalent(smoke_pipeline, concept_image):
    concept = encode(smoke_pipeline, concept_image)
    as_dict = run(smoke_pipeline, concept, PROMPTS[:1], seeds=(3,))
    (as_tuple,) = smoke_pipeline(
        PROMPTS[0],
        concept=concept,
        lam=0.8,
        num_inference_steps=3,
        output_type="pt",
        generator=torch.Generator().manual_seed(3),
        return_dict=False,
    )
    assert torch.equal(as_dict, as_tuple)


def test_components(smoke_pipeline, concept_image):
    """`components` holds every __init__ argument, and a pipeline built from them generates the same."""
    params = set(inspect.signature(ElitePipeline.__init__).parameters) - {"self"}
    assert set(smoke_pipeline.components) == params
    again = ElitePipeline(**smoke_pipeline.components)
    again.set_progress_bar_config(disable=True)
    concept = encode(smoke_pipeline, concept_image)
    assert torch.equal(run(again, concept), run(smoke_pipeline, concept))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_to_dtype_and_half_inference(fresh, concept_image, dtype):
    pipe = fresh()
    reference = run(pipe, encode(pipe, concept_image))
    modules = {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}
    assert set(modules) == {"vae", "text_encoder", "unet", "image_encoder", "elite"}
    assert all(m.dtype == torch.float32 for m in modules.values())
    pipe.to(dtype=dtype)
    assert {name: m.dtype for name, m in modules.items()} == dict.fromkeys(modules, dtype)
    half = fresh(torch_dtype=dtype)
    assert all(m.dtype == dtype for m in half.components.values() if isinstance(m, torch.nn.Module))
    images = run(half, encode(half, concept_image))
    assert images.dtype == dtype
    assert (images.float() - reference).abs().max() < 5e-2  # diffusers' tolerance for half-precision inference


def test_save_load_local(smoke_pipeline, concept_image, tmp_path):
    smoke_pipeline.save_pretrained(tmp_path / "pipe")
    assert smoke_pipeline.config["elite"][1] == "EliteModel"  # saving does not change the pipeline
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["_class_name"] == "ElitePipeline" and index["elite"] == ["elite.models.elite_model", "EliteModel"]
    config = json.loads((tmp_path / "pipe" / "elite" / "elite_config.json").read_text())
    assert config["image_encoder"] == "../image_encoder"
    loaded = ElitePipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert set(loaded.components) == set(smoke_pipeline.components)
    for name, module in smoke_pipeline.components.items():
        if isinstance(module, torch.nn.Module):
            other = loaded.components[name].state_dict()
            assert all(torch.equal(t, other[k]) for k, t in module.state_dict().items()), name
    concept = encode(smoke_pipeline, concept_image)
    assert torch.equal(encode(loaded, concept_image).local_tokens, concept.local_tokens)
    assert torch.equal(run(loaded, concept), run(smoke_pipeline, concept))
    # the saved elite/ also works as plain weights on the saved base
    assert ElitePipeline.from_pretrained(tmp_path / "pipe", tmp_path / "pipe" / "elite").elite is not None


def test_save_load_optional_components(smoke_models, smoke_pipeline, concept_image, tmp_path):
    """The base model alone (no ELITE weights, no image encoder) saves and loads back as the base alone."""
    base = ElitePipeline.from_pretrained(smoke_models / "base")
    base.set_progress_bar_config(disable=True)
    base.save_pretrained(tmp_path / "base")
    loaded = ElitePipeline.from_pretrained(tmp_path / "base")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.elite is None and loaded.image_encoder is None and loaded.image_processor is None
    words = Concept(words=encode(smoke_pipeline, concept_image).words, local_tokens=None)
    assert torch.equal(run(loaded, words), run(base, words))


def test_save_load_half_precision(fresh, concept_image, tmp_path):
    pipe = fresh(torch_dtype=torch.float16)
    pipe.save_pretrained(tmp_path / "fp16")
    loaded = ElitePipeline.from_pretrained(tmp_path / "fp16", torch_dtype=torch.float16)
    loaded.set_progress_bar_config(disable=True)
    assert all(m.dtype == torch.float16 for m in loaded.components.values() if isinstance(m, torch.nn.Module))
    concept = encode(pipe, concept_image)
    assert torch.equal(run(loaded, concept), run(pipe, concept))


def test_progress_bar(fresh, concept_image, capsys):
    pipe = fresh()
    pipe.set_progress_bar_config(disable=False)
    concept = encode(pipe, concept_image)
    capsys.readouterr()
    run(pipe, concept, num_inference_steps=4)
    assert "4/4" in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    run(pipe, concept, num_inference_steps=4)
    assert capsys.readouterr().err == ""

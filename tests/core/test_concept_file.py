"""Saved concepts (elite.concept_file, `elite encode`): generating from the file gives exactly the images of the
concept encoded in place (ElitePipeline, the loader mixin, the CLI); wrong files are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from core_helpers import gen as _gen
from core_helpers import loaded_sd_pipeline
from PIL import Image
from safetensors.torch import save_file

from elite.concept_file import load_concept, pixels_sha256, save_concept
from elite.errors import EliteError
from elite.models.elite_model import EliteModel


def _mask(image):
    return image.with_name("concept_mask.png")


def test_generation_from_the_file_equals_encoding_in_place(smoke_pipeline, smoke_models, concept_image, tmp_path):
    concept = smoke_pipeline.encode_concept(concept_image, _mask(concept_image))
    path = save_concept(concept, tmp_path / "disc.safetensors", smoke_pipeline.elite)
    assert [p.name for p in tmp_path.iterdir()] == ["disc.safetensors"]  # atomic: no temporary left
    loaded = load_concept(path)
    assert torch.equal(loaded.words, concept.words) and torch.equal(loaded.local_tokens, concept.local_tokens)
    assert torch.equal(_gen(smoke_pipeline, loaded), _gen(smoke_pipeline, concept))
    assert torch.equal(_gen(smoke_pipeline, loaded, lam=0.6), _gen(smoke_pipeline, concept, lam=0.6))
    # provenance: the weights file's hash and the pixels' hashes of image and mask
    source = loaded.provenance
    assert (
        source["weights_sha256"]
        == smoke_pipeline.elite.fingerprint()
        == EliteModel.from_pretrained(smoke_models / "elite").fingerprint()
    )
    with Image.open(concept_image) as img:
        assert source["images"] == [pixels_sha256(img.convert("RGB"))]
    assert source["masks"][0] is not None and source["file"] == str(path)
    # a concept of the whole image (no mask) and of several images round-trip as well
    several = smoke_pipeline.encode_concept([concept_image, concept_image], masks=[_mask(concept_image), None])
    again = load_concept(save_concept(several, tmp_path / "two.safetensors", smoke_pipeline.elite))
    assert torch.equal(_gen(smoke_pipeline, again), _gen(smoke_pipeline, several))
    assert again.provenance["masks"][1] is None and len(again.provenance["images"]) == 2


def test_the_fingerprint_of_weights_made_in_memory_is_their_files(smoke_models, tmp_path):
    model = EliteModel.from_pretrained(smoke_models / "elite")
    model.weights_sha256 = None  # as if built in memory: hashes what save_pretrained would write
    model.save_pretrained(tmp_path / "copy")
    assert model.fingerprint() == EliteModel.from_pretrained(tmp_path / "copy").fingerprint()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert model.fingerprint() != EliteModel.from_pretrained(tmp_path / "copy").fingerprint()


@pytest.fixture(scope="module")
def other_weights(smoke_models):
    model = EliteModel.from_pretrained(smoke_models / "elite")
    with torch.no_grad():
        for weight in model.local_kv.parameters():
            weight.mul_(1.5)
    model.weights_sha256 = None
    return model


def test_wrong_files_are_one_line_errors(smoke_pipeline, smoke_models, concept_image, other_weights, tmp_path):
    concept = smoke_pipeline.encode_concept(concept_image)
    foreign = save_concept(concept, tmp_path / "foreign.safetensors", other_weights)
    with pytest.raises(EliteError, match="foreign.safetensors: encoded with other ELITE weights") as err:
        _gen(smoke_pipeline, load_concept(foreign))
    assert "\n" not in str(err.value) and "elite encode" in str(err.value)
    with pytest.raises(EliteError, match="missing.safetensors: concept file not found; make one with `elite encode"):
        load_concept(tmp_path / "missing.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(EliteError, match="weights.safetensors: a safetensors file but not an ELITE concept"):
        load_concept(tmp_path / "weights.safetensors")
    with pytest.raises(EliteError, match="elite.safetensors: a safetensors file but not an ELITE concept"):
        load_concept(smoke_models / "elite" / "elite.safetensors")
    with pytest.raises(EliteError, match="concept.jpg: not a safetensors file"):
        load_concept(concept_image)
    # a pipeline without ELITE weights (the base model) refuses an ELITE concept file too
    from elite.pipeline import ElitePipeline

    base = ElitePipeline.from_pretrained(smoke_models / "base")
    own = save_concept(concept, tmp_path / "own.safetensors", smoke_pipeline.elite)
    with pytest.raises(EliteError, match="own.safetensors: an ELITE concept, but this pipeline has no ELITE"):
        _gen(base, load_concept(own))


def test_the_loader_mixin_takes_concept_files(smoke_pipeline, smoke_models, other_weights, tmp_path):
    pipe = loaded_sd_pipeline(smoke_models)
    image = Image.fromarray((np.random.default_rng(5).random((64, 64, 3)) * 255).astype("uint8"))
    concept = pipe.encode_concept(image)
    loaded = load_concept(save_concept(concept, tmp_path / "c.safetensors", pipe.elite_loaded.model))

    def run(c):
        g = torch.Generator().manual_seed(2)
        return pipe("a S* on the beach", concept=c, num_inference_steps=3, generator=g, output_type="np").images

    assert np.array_equal(run(loaded), run(concept))
    foreign = load_concept(save_concept(concept, tmp_path / "f.safetensors", other_weights))
    with pytest.raises(EliteError, match="f.safetensors: encoded with other ELITE weights"):
        run(foreign)


def test_cli_encode_then_generate_equals_generate_from_the_image(
    smoke_models, concept_image, tmp_path, repo_root, elite_cli
):
    weights, mask = smoke_models / "elite", _mask(concept_image)
    enc = elite_cli(
        "encode", concept_image, "--mask", mask, "--weights", weights, "-o", tmp_path / "c.safetensors", cwd=repo_root
    )
    assert enc.returncode == 0, enc.stderr
    common = [
        "generate",
        "--base",
        smoke_models / "base",
        "--weights",
        weights,
        "--steps",
        2,
        "--seed",
        3,
        "--prompt",
        "a S* on the beach",
    ]
    concept = ["--concept", tmp_path / "c.safetensors"]
    from_file = elite_cli(*common, *concept, "--out", tmp_path / "file.png", cwd=repo_root)
    assert from_file.returncode == 0, from_file.stderr
    in_place = elite_cli(
        *common, "--image", concept_image, "--mask", mask, "--out", tmp_path / "image.png", cwd=repo_root
    )
    assert in_place.returncode == 0, in_place.stderr
    with Image.open(tmp_path / "file.png") as a, Image.open(tmp_path / "image.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # one-line errors: a missing concept file, --mask without --image, a non-concept file
    for args, message in [
        (["--concept", tmp_path / "none.safetensors"], "none.safetensors: concept file not found"),
        (["--concept", tmp_path / "c.safetensors", "--mask", mask], "--mask2 and --global-crop go with --image"),
        (["--concept", weights / "elite.safetensors"], "elite.safetensors: a safetensors file but not an ELITE"),
    ]:
        run = elite_cli(*common, *args, "--out", tmp_path / "x.png", cwd=repo_root)
        assert run.returncode == 2 and run.stderr.strip().splitlines() == [run.stderr.strip()], run.stderr
        assert message in run.stderr
    assert not (tmp_path / "x.png").exists()

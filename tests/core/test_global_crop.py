"""`global_crop`: M^g reads the mask's object box grown by a padding instead of the whole image (as stage 1 trains
on box crops); the local branch and the default (the whole image, the authors' inference) are unchanged."""

from __future__ import annotations

import pytest
import torch
from core_helpers import loaded_sd_pipeline
from PIL import Image

from elite.concept_file import load_concept
from elite.errors import EliteError
from elite.images import binary_mask, mask_box, padded_box


@pytest.fixture(scope="module")
def disc(concept_image, session_tmp):
    image = Image.open(concept_image).convert("RGB")
    return image, Image.open(session_tmp / "concept_mask.png").convert("L")


def test_global_words_are_those_of_the_padded_object_box(smoke_pipeline, disc):
    image, mask = disc
    whole = smoke_pipeline.encode_concept(image, mask)
    cropped = smoke_pipeline.encode_concept(image, mask, global_crop=3)
    box = padded_box(mask_box(binary_mask(mask)), image.size, 3)
    assert box != (0, 0, *image.size)  # the disc leaves a margin: the crop is a real one
    alone = smoke_pipeline.encode_concept(image.crop(box))
    assert torch.equal(cropped.words, alone.words)
    assert not torch.allclose(cropped.words, whole.words)
    assert torch.equal(cropped.local_tokens, whole.local_tokens)  # the local branch reads the masked object as before
    assert cropped.provenance["global_crop"] == 3 and "global_crop" not in whole.provenance
    covering = smoke_pipeline.encode_concept(image, mask, global_crop=10_000)  # the box grows to the whole image
    assert torch.equal(covering.words, whole.words)
    assert torch.equal(smoke_pipeline.encode_concept(image, global_crop=3).words, whole.words)  # no mask: whole


def test_several_images_keep_the_setting_and_the_loader_mixin_takes_it(smoke_pipeline, smoke_models, disc):
    image, mask = disc
    fused = smoke_pipeline.encode_concept([image, image], masks=[mask, mask], global_crop=2)
    assert fused.provenance["global_crop"] == 2
    mixin = loaded_sd_pipeline(smoke_models).encode_concept(image, mask, global_crop=2)
    assert torch.allclose(mixin.words, smoke_pipeline.encode_concept(image, mask, global_crop=2).words, atol=1e-6)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_a_bad_padding_is_one_line(smoke_pipeline, disc, bad):
    with pytest.raises(EliteError, match="global_crop: expected None"):
        smoke_pipeline.encode_concept(disc[0], disc[1], global_crop=bad)


def test_a_mask_without_object_pixels_is_one_line(smoke_pipeline, disc):
    black = Image.new("L", disc[0].size, 0)
    with pytest.raises(EliteError, match="global_crop: the mask has no object pixels"):
        smoke_pipeline.encode_concept(disc[0], black, global_crop=2)


def test_cli_encode_records_it_and_generate_refuses_it_without_an_image(
    smoke_models, concept_image, session_tmp, tmp_path, repo_root, elite_cli
):
    mask, weights = session_tmp / "concept_mask.png", smoke_models / "elite"
    out = tmp_path / "c.safetensors"
    enc = elite_cli("encode", concept_image, "--mask", mask, "--weights", weights, "--global-crop", 2, "-o", out,
                    cwd=repo_root)  # fmt: skip
    assert enc.returncode == 0, enc.stderr
    assert load_concept(out).provenance["global_crop"] == 2
    common = ["generate", "--base", smoke_models / "base", "--weights", weights, "--prompt", "a S*"]
    refused = elite_cli(*common, "--concept", out, "--global-crop", 2, "--out", tmp_path / "x.png", cwd=repo_root)
    assert refused.returncode == 2 and "--global-crop go with --image" in refused.stderr
    negative = elite_cli(*common, "--image", concept_image, "--global-crop", "-2", "--out", tmp_path / "x.png",
                         cwd=repo_root)  # fmt: skip
    lines = negative.stderr.strip().splitlines()
    assert negative.returncode == 2 and len(lines) == 1 and "--global-crop: expected a whole number" in lines[0]
    assert not (tmp_path / "x.png").exists()

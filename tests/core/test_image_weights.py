"""Several images of one concept with weights: `encode_concept([a, b, c], weights=[...])` (elite.concepts)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from core_helpers import gen as _gen
from PIL import Image

from elite.concept_file import load_concept, save_concept
from elite.errors import EliteError


@pytest.fixture(scope="module")
def images(concept_image):
    """The disc (with its mask), a green square and a noise image."""
    square = np.full((128, 96, 3), 110, np.uint8)
    square[40:90, 20:70] = (30, 200, 40)
    noise = (np.random.default_rng(7).random((64, 64, 3)) * 255).astype(np.uint8)
    return [Image.open(concept_image).convert("RGB"), Image.fromarray(square), Image.fromarray(noise)]


@pytest.fixture(scope="module")
def masks(concept_image):
    return [concept_image.with_name("concept_mask.png"), None, None]


def _same(a, b) -> bool:
    return torch.equal(a.words, b.words) and torch.equal(a.local_tokens, b.local_tokens)


def test_weight_on_one_image_is_that_image_alone(smoke_pipeline, images, masks):
    first = smoke_pipeline.encode_concept(images[0], masks[0])
    weighted = smoke_pipeline.encode_concept(images, masks=masks, weights=[1, 0, 0])
    assert _same(weighted, first) and weighted.local_bias is None
    assert torch.equal(_gen(smoke_pipeline, weighted), _gen(smoke_pipeline, first))
    # the zero-weight images are left out of the rest as well
    two = smoke_pipeline.encode_concept(images, masks=masks, weights=[0, 2, 2])
    assert _same(two, smoke_pipeline.encode_concept(images[1:], masks=masks[1:]))


def test_equal_weights_are_the_default(smoke_pipeline, images, masks):
    default = smoke_pipeline.encode_concept(images, masks=masks)
    for weights in ([1, 1, 1], [0.5, 0.5, 0.5], [3, 3, 3]):
        equal = smoke_pipeline.encode_concept(images, masks=masks, weights=weights)
        assert _same(equal, default) and equal.local_bias is None
    assert torch.equal(_gen(smoke_pipeline, equal), _gen(smoke_pipeline, default))


def test_unequal_weights_weight_the_words_and_the_local_attention(smoke_pipeline, images, masks, tmp_path):
    a, b = (smoke_pipeline.encode_concept(i, m) for i, m in zip(images[:2], masks[:2]))
    weighted = smoke_pipeline.encode_concept(images[:2], masks=masks[:2], weights=[3, 1])
    torch.testing.assert_close(weighted.words, 0.75 * a.words + 0.25 * b.words)
    assert torch.equal(weighted.local_tokens, torch.cat([a.local_tokens, b.local_tokens], dim=1))
    p = a.local_tokens.shape[1]
    assert torch.allclose(weighted.local_bias[0, :p], torch.tensor(math.log(1.5)))
    assert torch.allclose(weighted.local_bias[0, p:], torch.tensor(math.log(0.5)))
    assert weighted.provenance["image_weights"] == [0.75, 0.25]
    equal = smoke_pipeline.encode_concept(images[:2], masks=masks[:2])
    assert not torch.allclose(_gen(smoke_pipeline, weighted), _gen(smoke_pipeline, equal), atol=1e-4)
    # nearly all weight on the first image: the second's tokens all but vanish from the local attention
    # (without the bias they would take about half of it), so the images are nearly the first image's alone
    almost = smoke_pipeline.encode_concept(images[:2], masks=masks[:2], weights=[1, 1e-7])
    torch.testing.assert_close(_gen(smoke_pipeline, almost), _gen(smoke_pipeline, a), rtol=0, atol=1e-4)
    unbiased = type(almost)(words=almost.words, local_tokens=almost.local_tokens)
    assert not torch.allclose(_gen(smoke_pipeline, unbiased), _gen(smoke_pipeline, a), atol=1e-3)
    # a weighted concept round-trips through a concept file exactly, and so do its two-concept uses
    loaded = load_concept(save_concept(weighted, tmp_path / "w.safetensors", smoke_pipeline.elite))
    assert torch.equal(loaded.local_bias, weighted.local_bias)
    assert loaded.provenance["image_weights"] == [0.75, 0.25]
    assert torch.equal(_gen(smoke_pipeline, loaded), _gen(smoke_pipeline, weighted))
    for mode in ("per_concept", "naive"):
        pair = _gen(smoke_pipeline, [weighted, b], prompt="a S1* and a S2*", multi_concept=mode)
        again = _gen(smoke_pipeline, [loaded, b], prompt="a S1* and a S2*", multi_concept=mode)
        assert torch.equal(pair, again)


@pytest.mark.parametrize(
    "weights, message",
    [
        ([1, 1], "weights: got 2 weight(s) for 3 image(s); give one per image"),
        ([1, -1, 1], "weights: expected finite numbers >= 0, got [1, -1, 1]"),
        ([1, float("nan"), 1], "weights: expected finite numbers >= 0"),
        ([0, 0, 0], "weights: all zero; give at least one image a weight > 0"),
    ],
)
def test_bad_weights_are_one_line_errors(smoke_pipeline, images, weights, message):
    with pytest.raises(EliteError) as err:
        smoke_pipeline.encode_concept(images, weights=weights)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_encode_with_image_weights(smoke_pipeline, smoke_models, concept_image, tmp_path, repo_root, elite_cli):
    square = tmp_path / "square.png"
    Image.new("RGB", (64, 64), (30, 200, 40)).save(square)
    args = ["encode", concept_image, square, "--weights", smoke_models / "elite", "-o", tmp_path / "c.safetensors"]
    run = elite_cli(*args, "--image-weights", 3, 1, cwd=repo_root)
    assert run.returncode == 0, run.stderr
    expected = smoke_pipeline.encode_concept([concept_image, square], weights=[3, 1])
    got = load_concept(tmp_path / "c.safetensors")
    assert _same(got, expected) and torch.equal(got.local_bias, expected.local_bias)
    bad = elite_cli(*args[:-2], "-o", tmp_path / "bad.safetensors", "--image-weights", 1, cwd=repo_root)
    assert bad.returncode == 2 and "--image-weights: got 1 weight(s) for 2 image(s)" in bad.stderr
    assert not (tmp_path / "bad.safetensors").exists()

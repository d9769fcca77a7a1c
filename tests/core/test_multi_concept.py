"""Several images of one concept, and two concepts in one prompt (S1*, S2*), through ElitePipeline."""

import numpy as np
import pytest
import torch
from PIL import Image

from elite.errors import EliteError


def _gen(pipe, concept, prompt="a photo of a S*", **kw):
    kw = {"lam": 0.8, "num_inference_steps": 3, "generator": torch.Generator().manual_seed(0), **kw}
    return pipe(prompt, concept=concept, output_type="pt", **kw).images


@pytest.fixture(scope="module")
def second_image(session_tmp):
    """Another concept: a green square on grey (96x128), and its mask."""
    rgb = np.full((128, 96, 3), 110, np.uint8)
    rgb[40:90, 20:70] = (30, 200, 40)
    mask = np.zeros((128, 96), np.uint8)
    mask[40:90, 20:70] = 255
    Image.fromarray(rgb).save(session_tmp / "square.png")
    Image.fromarray(mask).save(session_tmp / "square_mask.png")
    return session_tmp / "square.png"


def _mask(path):
    return path.with_name(path.stem + "_mask.png")


def test_one_image_in_a_list_is_bit_identical(smoke_pipeline, concept_image):
    single = smoke_pipeline.encode_concept(concept_image, _mask(concept_image))
    listed = smoke_pipeline.encode_concept([concept_image], masks=[_mask(concept_image)])
    assert torch.equal(single.words, listed.words) and torch.equal(single.local_tokens, listed.local_tokens)
    # and one concept given as a list of one: the same images as the concept itself, same seed
    assert torch.equal(_gen(smoke_pipeline, single), _gen(smoke_pipeline, [listed]))


def test_several_images_mean_the_words_and_concatenate_the_local_tokens(smoke_pipeline, concept_image, second_image):
    a = smoke_pipeline.encode_concept(concept_image, _mask(concept_image))
    b = smoke_pipeline.encode_concept(second_image)  # no mask: the whole image
    both = smoke_pipeline.encode_concept([concept_image, second_image], masks=[_mask(concept_image), None])
    torch.testing.assert_close(both.words, (a.words + b.words) / 2)
    assert torch.equal(both.local_tokens, torch.cat([a.local_tokens, b.local_tokens], dim=1))
    assert both.local_tokens.shape == (1, 512, 32)
    # the local branch attends over all of them: the images differ from either image's alone
    image = _gen(smoke_pipeline, both)
    assert not torch.equal(image, _gen(smoke_pipeline, a)) and not torch.equal(image, _gen(smoke_pipeline, b))
    # one mask= applies to every image
    same = smoke_pipeline.encode_concept([concept_image, concept_image], mask=_mask(concept_image))
    assert torch.equal(same.local_tokens, torch.cat([a.local_tokens] * 2, dim=1))


def test_mask_count_must_match_the_images(smoke_pipeline, concept_image):
    with pytest.raises(EliteError, match="2 image\\(s\\) and 1 mask"):
        smoke_pipeline.encode_concept([concept_image, concept_image], masks=[None])
    with pytest.raises(EliteError, match="not both"):
        smoke_pipeline.encode_concept([concept_image], mask=_mask(concept_image), masks=[None])
    with pytest.raises(EliteError, match="at least one"):
        smoke_pipeline.encode_concept([])


def test_two_concepts_each_at_its_own_placeholder(smoke_pipeline, concept_image, second_image):
    disc = smoke_pipeline.encode_concept(concept_image, _mask(concept_image))
    square = smoke_pipeline.encode_concept(second_image, _mask(second_image))
    per = _gen(smoke_pipeline, [disc, square], "a S1* next to a S2*")
    # the same scene written the other way round (S1* names the square): the same images
    swapped = _gen(smoke_pipeline, [square, disc], "a S2* next to a S1*")
    torch.testing.assert_close(per, swapped, rtol=1e-5, atol=1e-5)
    # which concept stands where matters, and the per-concept weighting differs from the naive baseline
    assert not torch.allclose(per, _gen(smoke_pipeline, [square, disc], "a S1* next to a S2*"), atol=1e-4)
    naive = _gen(smoke_pipeline, [disc, square], "a S1* next to a S2*", multi_concept="naive")
    assert not torch.allclose(per, naive, atol=1e-4)
    # in a batch (two prompts, two images each, one generator per image) each image is the one made alone
    prompts = ["a S1* next to a S2*", "a S2* on top of a S1*"]
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    batch = _gen(smoke_pipeline, [disc, square], prompts, num_images_per_prompt=2, generator=gens)
    alone = _gen(smoke_pipeline, [disc, square], prompts[1], generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(batch[3:], alone, rtol=1e-5, atol=1e-5)
    # lambda 0: both ways are the global words alone
    assert torch.equal(
        _gen(smoke_pipeline, [disc, square], "a S1* next to a S2*", lam=0.0),
        _gen(smoke_pipeline, [disc, square], "a S1* next to a S2*", lam=0.0, multi_concept="naive"),
    )


@pytest.mark.parametrize(
    "concepts, prompt, kw, match",
    [
        (1, "a S1* on the beach", {}, "one concept was given"),  # S1* but no second image
        (2, "a S1* next to a S2* and a S3*", {}, "3 placeholders for 2 concepts"),
        (2, "a S1* next to a S1*", {}, "S1\\* more than once"),
        (2, "a S* next to a dog", {}, "has S\\* but 2 concepts"),
        (2, "a S1* next to a S2*", {"multi_concept": "mixed"}, "multi_concept must be one of per_concept, naive"),
    ],
)
def test_placeholder_and_mode_errors_are_one_line(smoke_pipeline, concept_image, concepts, prompt, kw, match):
    concept = smoke_pipeline.encode_concept(concept_image)
    with pytest.raises(EliteError, match=match) as info:
        _gen(smoke_pipeline, [concept] * concepts, prompt, **kw)
    assert "\n" not in str(info.value)

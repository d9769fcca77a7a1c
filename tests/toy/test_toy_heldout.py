"""The held-out set needs every attribute it claims to test, and nothing held out leaks into training."""

from __future__ import annotations

import numpy as np
import pytest
from toy_helpers import toy_params, toy_raw

from elite.config import parse_params
from elite.errors import EliteError
from elite.toy.bank import full_caption
from elite.toy.heldout import held_out_concepts, held_out_identities, single_attribute_oracles
from elite.toy.retrieval import concept_shots


def test_no_single_attribute_solves_the_held_out_set():
    oracles = single_attribute_oracles(held_out_concepts(toy_params().toy.held_out))
    assert max(oracles.values()) <= 0.5, oracles
    assert oracles["pattern"] < oracles["colour"] <= 0.5


def test_the_toy_baselines_invert_held_out_concepts():
    params = toy_params()
    names = [c.name for c in held_out_concepts(params.toy.held_out)]
    subjects = params.baselines.subjects
    assert subjects and set(subjects) <= set(names), (subjects, names)


def test_a_set_that_colour_alone_solves_is_refused_in_one_line():
    raw = toy_raw()
    raw["toy"]["held_out"] = [["ball", "red", "checkered"], ["box", "orange", "striped"], ["star", "blue", "plain"]]
    with pytest.raises(EliteError) as err:
        parse_params(raw, profile="toy")
    msg = str(err.value)
    assert "\n" not in msg and "toy.held_out" in msg and "colour" in msg and "red" in msg


def test_a_colour_must_keep_two_patterns_in_training():
    with pytest.raises(EliteError, match=r"leaves red with 1 pattern\(s\) in training \(plain\)"):
        held_out_concepts([["ball", "red", "striped"], ["ball", "red", "checkered"], ["box", "red", "dotted"]])


def test_unknown_words_are_one_line_errors():
    with pytest.raises(EliteError, match=r"toy.held_out .*'pink' is not one of"):
        held_out_concepts([["ball", "pink", "striped"], ["ball", "pink", "plain"]])


def test_colour_alone_retrieves_at_most_half_of_the_held_out_renders():
    """A scorer that sees only colour (the mean colour of the object's pixels, from exact masks) retrieves each
    held-out render's concept by its nearest reference: the colour-matched twin takes about half of them."""
    concepts = held_out_concepts(toy_params().toy.held_out)

    def mean_colour(shot) -> np.ndarray:
        pixels, mask = np.asarray(shot.image, dtype=float), np.asarray(shot.mask) > 0
        return pixels[mask].mean(0)

    refs = np.stack([mean_colour(concept_shots(c, 1, 32, 500 + k)[0]) for k, c in enumerate(concepts)])
    hits = []
    for k, concept in enumerate(concepts):
        for shot in concept_shots(concept, 40, 32, 1000 + k):
            hits.append(int(np.argmin(((refs - mean_colour(shot)) ** 2).sum(1))) == k)
    score = float(np.mean(hits))
    assert score <= 0.5 + 2 * np.sqrt(0.25 / len(hits)), score  # the oracle's 0.5, within two standard errors


def test_training_banks_hold_no_held_out_identity():
    """Every bank prepare_models trains a stand-in or probe on, and the captions the CLIP stand-in reads."""
    from elite.toy.prepare import _bank

    params = toy_params(bank=400)
    held = held_out_identities(params.toy.held_out)
    words = {f"{c} {p}" for c, p in held}
    for offset, share in ((0, None), (5, 0.0)):
        bank = _bank(params, offset=offset, two_object_share=share)
        assert not any(o.identity in held for s in bank.specs for o in s.objects)
        assert not any(w in full_caption(s) for s in bank.specs for w in words)

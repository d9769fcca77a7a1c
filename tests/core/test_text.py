import pytest
import torch
from transformers import CLIPTextModel, CLIPTokenizer

from elite.errors import EliteError
from elite.models.text import encode_with_words, tokenize_plain, tokenize_with_placeholder


@pytest.fixture(scope="module")
def tokenizer(smoke_models):
    return CLIPTokenizer.from_pretrained(smoke_models / "base" / "tokenizer")


@pytest.fixture(scope="module")
def text_encoder(smoke_models):
    return CLIPTextModel.from_pretrained(smoke_models / "base" / "text_encoder").eval()


@pytest.mark.parametrize(
    "prompt, before_tokens",
    [
        ("a close-up photo of a S*", ["a", "close", "-", "up", "photo", "of", "a"]),
        ("zoomed in S*", ["zo", "omed", "in"]),
        ("a S*, oil painting", ["a"]),
        ("S* on the beach", []),
    ],
)
def test_placeholder_index_found_by_tokenizer(tokenizer, prompt, before_tokens):
    tp = tokenize_with_placeholder(tokenizer, prompt)
    assert tp.slot == 1 + len(before_tokens)
    toks = tokenizer.convert_ids_to_tokens(tp.input_ids[1 : tp.slot].tolist())
    assert [t.replace("</w>", "") for t in toks] == before_tokens
    # the rest of the prompt follows the slot exactly as the tokenizer splits it
    rest = prompt.split("S*", 1)[1]
    after = tokenizer(rest, add_special_tokens=False).input_ids
    assert tp.input_ids[tp.slot + 1 : tp.slot + 1 + len(after)].tolist() == after
    assert tp.input_ids[tp.slot + 1 + len(after)] == tokenizer.eos_token_id
    assert len(tp.input_ids) == 77


def test_five_slots_shift_following_tokens(tokenizer):
    one = tokenize_with_placeholder(tokenizer, "a photo of a S* on a table", num_slots=1)
    five = tokenize_with_placeholder(tokenizer, "a photo of a S* on a table", num_slots=5)
    assert five.slot == one.slot
    assert (
        five.input_ids[five.slot + 5 : five.slot + 9].tolist() == one.input_ids[one.slot + 1 : one.slot + 5].tolist()
    )


@pytest.mark.parametrize("prompt", ["a photo of a dog", "S* and S*", "a S*S* twin", ""])
def test_prompts_without_exactly_one_placeholder_are_errors(tokenizer, prompt):
    with pytest.raises(EliteError, match="placeholder"):
        tokenize_with_placeholder(tokenizer, prompt)


def test_bare_s_only_with_option(tokenizer):
    with pytest.raises(EliteError):
        tokenize_with_placeholder(tokenizer, "a photo of S")
    assert tokenize_with_placeholder(tokenizer, "a photo of S", allow_bare_s=True).slot == 4
    # "S" inside a word or a possessive is not a placeholder
    assert tokenize_with_placeholder(tokenizer, "SUVs near S", allow_bare_s=True).slot == 1 + len(
        tokenizer("SUVs near ", add_special_tokens=False).input_ids
    )


def test_overlong_prompt_error_names_the_count(tokenizer):
    with pytest.raises(EliteError, match=r"is \d+ tokens"):
        tokenize_with_placeholder(tokenizer, "a S* " + "very " * 80)


def test_injection_without_change_matches_the_plain_encoder(tokenizer, text_encoder):
    ids = tokenize_plain(tokenizer, ["a photo of a dog on the beach"])
    slot = torch.tensor([4])
    own = text_encoder.get_input_embeddings()(ids[:, 4:5])
    with torch.no_grad():
        plain = text_encoder(ids).last_hidden_state
        injected = encode_with_words(text_encoder, ids, slot, own)
    torch.testing.assert_close(injected, plain, rtol=1e-5, atol=1e-5)


def test_states_before_the_placeholder_are_unchanged(tokenizer, text_encoder):
    tp = tokenize_with_placeholder(tokenizer, "a close-up photo of a S* in the snow")
    ids, slot = tp.input_ids[None], torch.tensor([tp.slot])
    with torch.no_grad():
        a = encode_with_words(text_encoder, ids, slot, torch.randn(1, 1, 32))
        b = encode_with_words(text_encoder, ids, slot, torch.randn(1, 1, 32) * 5)
    torch.testing.assert_close(a[:, : tp.slot], b[:, : tp.slot])
    assert not torch.allclose(a[:, tp.slot :], b[:, tp.slot :])


def test_injection_is_differentiable(tokenizer, text_encoder):
    tp = tokenize_with_placeholder(tokenizer, "a S*", num_slots=5)
    words = torch.randn(1, 5, 32, requires_grad=True)
    encode_with_words(text_encoder, tp.input_ids[None], torch.tensor([tp.slot]), words).sum().backward()
    assert words.grad is not None and words.grad.abs().sum() > 0


def test_two_concepts_each_placeholder_found_by_tokenizer(tokenizer):
    prompt = "a close-up photo of a S2* next to a zoomed S1*, oil painting"
    tp = tokenize_with_placeholder(tokenizer, prompt, num_concepts=2)
    pieces = [
        tokenizer(t, add_special_tokens=False).input_ids
        for t in ("a close-up photo of a ", " next to a zoomed ", ", oil painting")
    ]
    s2, s1 = 1 + len(pieces[0]), 2 + len(pieces[0]) + len(pieces[1])
    assert tp.slots == (s1, s2) and tp.slot == s1  # in concept order, wherever they stand in the prompt
    ids = tp.input_ids.tolist()
    assert (
        ids[1:s2] == pieces[0] and ids[s2 + 1 : s1] == pieces[1] and ids[s1 + 1 : s1 + 1 + len(pieces[2])] == pieces[2]
    )
    assert ids[s1 + 1 + len(pieces[2])] == tokenizer.eos_token_id
    # one concept with S*: the same ids as before concepts were numbered
    one = tokenize_with_placeholder(tokenizer, "a S* next to a dog")
    assert one.slots == (2,) and one.input_ids.tolist()[:2] == [
        tokenizer.bos_token_id,
        *tokenizer("a ", add_special_tokens=False).input_ids,
    ]


@pytest.mark.parametrize(
    "prompt, concepts, match",
    [
        ("a S1* on the beach", 1, "uses S1\\* .* but one concept was given"),  # S1* but no second image
        ("a S1* next to a S2*", 1, "but one concept was given"),
        ("a S1* next to a S2* and a S3*", 2, "has 3 placeholders for 2 concepts"),  # three placeholders
        ("a S1* next to a S1*", 2, "has S1\\* more than once"),  # a repeated placeholder
        ("a S1* next to a S3*", 2, "uses S3\\* but 2 concepts"),
        ("a S1* next to a dog", 2, "has no S2\\* for concept 2"),
        ("a S* next to a S2*", 2, "has S\\* but 2 concepts"),
    ],
)
def test_placeholders_that_do_not_match_the_concepts_are_one_line_errors(tokenizer, prompt, concepts, match):
    with pytest.raises(EliteError, match=match) as info:
        tokenize_with_placeholder(tokenizer, prompt, num_concepts=concepts)
    assert "\n" not in str(info.value)
    assert "S1* and S2*" in str(info.value) or concepts == 1  # says how to write them


def test_two_concepts_words_go_to_their_own_positions(tokenizer, text_encoder):
    """w0 of concept c at S{c}*: with the embeddings of 'dog' and 'cat' as the two words, the states are the
    plain encoder's for 'a dog next to a cat'."""
    tp = tokenize_with_placeholder(tokenizer, "a S2* next to a S1*", num_concepts=2)
    ids = tokenize_plain(tokenizer, ["a dog next to a cat"])
    cat, dog = ids[0, tp.slots[0]], ids[0, tp.slots[1]]
    words = text_encoder.get_input_embeddings()(torch.stack([cat, dog]))[None, :, None]  # (1, 2 concepts, 1, D)
    with torch.no_grad():
        plain = text_encoder(ids).last_hidden_state
        injected = encode_with_words(text_encoder, tp.input_ids[None], torch.tensor([tp.slots]), words)
    torch.testing.assert_close(injected, plain, rtol=1e-5, atol=1e-5)

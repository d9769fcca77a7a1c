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
    assert five.input_ids[five.slot + 5 : five.slot + 9].tolist() == one.input_ids[one.slot + 1 : one.slot + 5].tolist()


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

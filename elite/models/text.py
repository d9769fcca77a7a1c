"""Placeholder handling: find S* with the tokenizer and inject concept words into the CLIP text encoder.

The prompt is split at the placeholder and each side is tokenized on its own. CLIP's BPE works per
word, so the pieces tokenize exactly as they do inside the whole prompt, and the placeholder's position
is 1 (start token) + the number of tokens before it, whatever those words are ("close-up" is three
tokens, "zoomed" two). The authors counted spaces instead, which is wrong for such prompts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from transformers import CLIPTextModel, CLIPTokenizer
from transformers.masking_utils import create_causal_mask

from elite.errors import EliteError

PLACEHOLDER = "S*"
_STAR = re.compile(r"(?<![\w*])S\*(?![\w*])")
_STAR_OR_S = re.compile(r"(?<![\w*])S(?:\*)?(?![\w*])")


@dataclass(frozen=True)
class TokenizedPrompt:
    input_ids: torch.Tensor  # (L,) long, padded to the tokenizer's max length
    slot: int  # index of the first injected word
    num_slots: int


def find_placeholder(prompt: str, allow_bare_s: bool = False) -> re.Match:
    """The single placeholder in `prompt` (S*, or also a standalone S when `allow_bare_s`)."""
    pattern = _STAR_OR_S if allow_bare_s else _STAR
    found = list(pattern.finditer(prompt))
    accepted = "'S*' or 'S'" if allow_bare_s else "'S*'"
    if not found:
        raise EliteError(f"prompt {prompt!r} has no placeholder: write {accepted} where the concept goes")
    if len(found) > 1:
        raise EliteError(f"prompt {prompt!r} has {len(found)} placeholders; use exactly one {accepted}")
    return found[0]


def tokenize_with_placeholder(
    tokenizer: CLIPTokenizer, prompt: str, num_slots: int = 1, allow_bare_s: bool = False
) -> TokenizedPrompt:
    """Token ids with `num_slots` positions reserved at the placeholder; later tokens shift right."""
    match = find_placeholder(prompt, allow_bare_s)
    before = tokenizer(prompt[: match.start()], add_special_tokens=False).input_ids
    after = tokenizer(prompt[match.end() :], add_special_tokens=False).input_ids
    ids = [tokenizer.bos_token_id, *before, *([tokenizer.pad_token_id] * num_slots), *after, tokenizer.eos_token_id]
    limit = tokenizer.model_max_length
    if len(ids) > limit:
        raise EliteError(
            f"prompt {prompt!r} is {len(ids)} tokens with the concept word(s); the text encoder takes {limit}: shorten it"
        )
    ids += [tokenizer.pad_token_id] * (limit - len(ids))
    return TokenizedPrompt(torch.tensor(ids, dtype=torch.long), slot=1 + len(before), num_slots=num_slots)


def tokenize_plain(tokenizer: CLIPTokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def encode_with_words(
    text_encoder: CLIPTextModel, input_ids: torch.Tensor, slots: torch.Tensor, words: torch.Tensor
) -> torch.Tensor:
    """Last hidden state of the text encoder with the token embeddings at the slots replaced.

    input_ids (B, L); slots (B,) index of the first slot per row; words (B, K, D) go to positions
    slot..slot+K-1. Position embeddings are added after the replacement, as for ordinary tokens.
    """
    model = getattr(text_encoder, "text_model", text_encoder)  # transformers 5 flattened CLIPTextModel
    embeds = model.embeddings.token_embedding(input_ids)
    batch = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None]
    cols = slots.to(input_ids.device)[:, None] + torch.arange(words.shape[1], device=input_ids.device)[None]
    embeds = embeds.index_put((batch.expand_as(cols), cols), words.to(embeds.dtype))
    hidden = model.embeddings(inputs_embeds=embeds)
    mask = create_causal_mask(config=model.config, inputs_embeds=hidden, attention_mask=None, past_key_values=None)
    encoded = model.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True)
    return model.final_layer_norm(encoded.last_hidden_state)

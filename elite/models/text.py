"""Placeholder handling: find S* with the tokenizer and inject concept words into the CLIP text encoder.

One concept is written S*; several are written S1*, S2*, ... (each once). The prompt is split at the
placeholders and each piece is tokenized on its own. CLIP's BPE works per
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
_NUMBERED = re.compile(r"(?<![\w*])S(\d+)\*(?![\w*])")  # S1*, S2*: one per concept


@dataclass(frozen=True)
class TokenizedPrompt:
    input_ids: torch.Tensor  # (L,) long, padded to the tokenizer's max length
    slots: tuple[int, ...]  # index of the first injected word of each concept, in concept order
    num_slots: int  # words injected per concept

    @property
    def slot(self) -> int:
        """The first (with one concept: the only) concept's first word."""
        return self.slots[0]


SHOWN_CHARS = 80  # a longer prompt is named by its length in messages, not echoed


def shown(prompt: str) -> str:
    """The prompt as error messages quote it: repr() when short, else its length (one readable line)."""
    return repr(prompt) if len(prompt) <= SHOWN_CHARS else f"of {len(prompt):,} characters"


def placeholder_names(num_concepts: int) -> list[str]:
    """How the prompt names the concepts: S* for one, S1* S2* ... for several."""
    return [PLACEHOLDER] if num_concepts == 1 else [f"S{i}*" for i in range(1, num_concepts + 1)]


def find_placeholder(prompt: str, allow_bare_s: bool = False) -> re.Match:
    """The single placeholder in `prompt` (S*, or also a standalone S when `allow_bare_s`)."""
    return find_placeholders(prompt, 1, allow_bare_s)[0]


def find_placeholders(prompt: str, num_concepts: int = 1, allow_bare_s: bool = False) -> list[re.Match]:
    """One placeholder per concept, in concept order: `S*` for one concept (or a standalone S when
    `allow_bare_s`), `S1*` ... `SN*` for N concepts, each exactly once; anything else is an EliteError."""
    if num_concepts < 1:
        raise EliteError("no concept given: encode at least one concept image")
    numbered = list(_NUMBERED.finditer(prompt))
    if num_concepts == 1:
        if numbered:
            raise EliteError(
                f"prompt {shown(prompt)} uses {numbered[0].group(0)} (numbered placeholders are for several "
                f"concepts) but one concept was given: write S* or give a second concept "
                f"(--image2; concept=[c1, c2])"
            )
        pattern = _STAR_OR_S if allow_bare_s else _STAR
        found = list(pattern.finditer(prompt))
        accepted = "'S*' or 'S'" if allow_bare_s else "'S*'"
        if not found:
            raise EliteError(f"prompt {shown(prompt)} has no placeholder: write {accepted} where the concept goes")
        if len(found) > 1:
            raise EliteError(f"prompt {shown(prompt)} has {len(found)} placeholders; use exactly one {accepted}")
        return found
    names = placeholder_names(num_concepts)
    wanted = f"write {', '.join(names[:-1])} and {names[-1]}, once each"
    plain = list(_STAR.finditer(prompt))
    if plain:
        raise EliteError(f"prompt {shown(prompt)} has S* but {num_concepts} concepts were given: {wanted}")
    if len(numbered) > num_concepts:
        raise EliteError(
            f"prompt {shown(prompt)} has {len(numbered)} placeholders for {num_concepts} concepts: {wanted}"
        )
    by_name: dict[str, re.Match] = {}
    for match in numbered:
        name = match.group(0)
        if name not in names:
            raise EliteError(f"prompt {shown(prompt)} uses {name} but {num_concepts} concepts were given: {wanted}")
        if name in by_name:
            raise EliteError(f"prompt {shown(prompt)} has {name} more than once: {wanted}")
        by_name[name] = match
    missing = [n for n in names if n not in by_name]
    if missing:
        raise EliteError(
            f"prompt {shown(prompt)} has no {missing[0]} for concept {names.index(missing[0]) + 1}: {wanted}"
        )
    return [by_name[n] for n in names]


def tokenize_with_placeholder(
    tokenizer: CLIPTokenizer, prompt: str, num_slots: int = 1, allow_bare_s: bool = False, num_concepts: int = 1
) -> TokenizedPrompt:
    """Token ids with `num_slots` positions reserved at each concept's placeholder; later tokens shift right.

    The text between placeholders is tokenized piece by piece (CLIP's BPE is per word, so each piece
    tokenizes as it does inside the whole prompt)."""
    matches = find_placeholders(prompt, num_concepts, allow_bare_s)
    ids, starts, cut = [tokenizer.bos_token_id], {}, 0
    for match in sorted(matches, key=lambda m: m.start()):
        ids += tokenizer(prompt[cut : match.start()], add_special_tokens=False).input_ids
        starts[match.start()] = len(ids)
        ids += [tokenizer.pad_token_id] * num_slots
        cut = match.end()
    ids += [*tokenizer(prompt[cut:], add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    limit = tokenizer.model_max_length
    if len(ids) > limit:
        raise EliteError(
            f"prompt {shown(prompt)} is {len(ids)} tokens with the concept word(s); the text encoder takes {limit}: shorten it"
        )
    ids += [tokenizer.pad_token_id] * (limit - len(ids))
    return TokenizedPrompt(
        torch.tensor(ids, dtype=torch.long), slots=tuple(starts[m.start()] for m in matches), num_slots=num_slots
    )


def tokenize_plain(tokenizer: CLIPTokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def encode_with_words(
    text_encoder: CLIPTextModel, input_ids: torch.Tensor, slots: torch.Tensor, words: torch.Tensor
) -> torch.Tensor:
    """Last hidden state of the text encoder with the token embeddings at the slots replaced.

    input_ids (B, L); slots (B,) index of the first slot per row and words (B, K, D) go to positions
    slot..slot+K-1; or, for several concepts, slots (B, C) and words (B, C, K, D). Position embeddings are
    added after the replacement, as for ordinary tokens.
    """
    model = getattr(text_encoder, "text_model", text_encoder)  # transformers 5 flattened CLIPTextModel
    embeds = model.embeddings.token_embedding(input_ids)
    slots = slots.to(input_ids.device)
    if slots.ndim == 1:
        slots, words = slots[:, None], words[:, None]
    batch = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None]
    cols = (slots[:, :, None] + torch.arange(words.shape[2], device=input_ids.device)).flatten(1)
    embeds = embeds.index_put((batch.expand_as(cols), cols), words.flatten(1, 2).to(embeds.dtype))
    hidden = model.embeddings(inputs_embeds=embeds)
    mask = create_causal_mask(config=model.config, inputs_embeds=hidden, attention_mask=None, past_key_values=None)
    encoded = model.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True)
    return model.final_layer_norm(encoded.last_hidden_state)

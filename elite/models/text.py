"""Placeholder handling: find S* with the tokenizer and inject concept words into the CLIP text encoder.

One concept is written S*; several are written S1*, S2*, ... (each once). The prompt is split at the
placeholders and each piece is tokenized on its own. CLIP's BPE works per
word, so the pieces tokenize exactly as they do inside the whole prompt, and the placeholder's position
is 1 (start token) + the number of tokens before it, whatever those words are ("close-up" is three
tokens, "zoomed" two). The authors counted spaces instead, which is wrong for such prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import CLIPTextModel, CLIPTokenizer
from transformers.masking_utils import create_causal_mask

from elite.errors import EliteError
from elite.placeholders import find_placeholders, shown


@dataclass(frozen=True)
class TokenizedPrompt:
    input_ids: torch.Tensor  # (L,) long, padded to the tokenizer's max length
    slots: tuple[int, ...]  # index of the first injected word of each concept, in concept order
    num_slots: int  # words injected per concept

    @property
    def slot(self) -> int:
        """The first (with one concept: the only) concept's first word."""
        return self.slots[0]


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
            f"prompt {shown(prompt)} is {len(ids)} tokens with the concept word(s); the text encoder takes {limit}: "
            "shorten it"
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

"""The toy fixture's vocabulary trim (tests/toy/make_fixture.py, trim_vocabulary) is exact on the toy corpus.

A small random CLIP text encoder with the full CLIP tokenizer is trimmed to the toy corpus: every corpus text
must give the same token strings, consistent ids and bit-identical outputs (last hidden state and pooled output,
atol 0), while a word outside the corpus still tokenizes, into smaller pieces. The committed fixture must have
been trimmed: its tokenizer and text encoder files are each under 1 MB and encode the corpus as CLIP does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from make_fixture import OUT, toy_corpus, trim_vocabulary
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from elite.smoke_models import write_clip_tokenizer

MAX_TOKENS = 20  # the toy text encoder's positions
LIMIT = 1_000_000  # issue 25: nothing over 1 MB in git
OUTSIDE = ["zebra", "photosynthesis", "Crème brûlée 42!"]  # words no toy text uses (one with non-ASCII bytes)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return toy_corpus()


@pytest.fixture(scope="module")
def full_tokenizer(tmp_path_factory) -> CLIPTokenizer:
    return write_clip_tokenizer(tmp_path_factory.mktemp("clip") / "tokenizer")


@pytest.fixture(scope="module")
def bases(tmp_path_factory, full_tokenizer, corpus) -> tuple[Path, Path, dict]:
    """A random CLIP text encoder with CLIP's 49,408-token vocabulary (full/) and its trim to the corpus."""
    root = tmp_path_factory.mktemp("trim")
    full_tokenizer.save_pretrained(root / "full" / "tokenizer")
    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=len(full_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=full_tokenizer.bos_token_id,
        eos_token_id=full_tokenizer.eos_token_id,
        pad_token_id=full_tokenizer.pad_token_id,
    )
    CLIPTextModel(config).save_pretrained(root / "full" / "text_encoder")
    shutil.copytree(root / "full", root / "trimmed")
    report = trim_vocabulary(root / "trimmed", corpus)
    return root / "full", root / "trimmed", report


def load(base: Path) -> tuple[CLIPTokenizer, CLIPTextModel]:
    return CLIPTokenizer.from_pretrained(base / "tokenizer"), CLIPTextModel.from_pretrained(
        base / "text_encoder"
    ).eval()


def ids(tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(
        texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
    ).input_ids


def test_trim_is_exact_on_the_corpus(bases, corpus):
    full_dir, trimmed_dir, report = bases
    (full_tok, full_enc), (tok, enc) = load(full_dir), load(trimmed_dir)
    assert report["before"] == 49408 and report["after"] == len(tok) < 1000
    assert enc.config.vocab_size == len(tok) == enc.get_input_embeddings().weight.shape[0]
    assert (enc.config.bos_token_id, enc.config.eos_token_id) == (tok.bos_token_id, tok.eos_token_id)
    old, new = ids(full_tok, corpus), ids(tok, corpus)
    assert full_tok.batch_decode(old) == tok.batch_decode(new)
    assert [full_tok.convert_ids_to_tokens(r) for r in old.tolist()] == [
        tok.convert_ids_to_tokens(r) for r in new.tolist()
    ]
    pairs = set(zip(old.flatten().tolist(), new.flatten().tolist()))  # old id <-> new id, one to one
    assert len(pairs) == len({o for o, _ in pairs}) == len({n for _, n in pairs}) > 50
    with torch.no_grad():
        before, after = full_enc(old), enc(new)
    assert torch.equal(before.last_hidden_state, after.last_hidden_state)
    assert torch.equal(before.pooler_output, after.pooler_output)


def test_words_outside_the_corpus_fall_back_to_smaller_pieces(bases, corpus):
    full_dir, trimmed_dir, _ = bases
    (full_tok, _), (tok, enc) = load(full_dir), load(trimmed_dir)
    for text in OUTSIDE:
        assert text.lower() not in corpus
        pieces = tok(text).input_ids
        assert pieces[0] == tok.bos_token_id and pieces[-1] == tok.eos_token_id
        assert tok.unk_token_id not in pieces[1:-1] and max(pieces) < enc.config.vocab_size
        assert len(pieces) > len(full_tok(text).input_ids)  # the full vocabulary has longer pieces for them
        assert tok.decode(pieces, skip_special_tokens=True) == full_tok.decode(
            full_tok(text).input_ids, skip_special_tokens=True
        )
    with torch.no_grad():
        assert enc(ids(tok, OUTSIDE)).last_hidden_state.isfinite().all()


def test_committed_fixture_is_trimmed(full_tokenizer, corpus):
    base = OUT / "base"
    files = [p for part in ("tokenizer", "text_encoder") for p in (base / part).iterdir()]
    assert files and all(p.stat().st_size < LIMIT for p in files), [(p.name, p.stat().st_size) for p in files]
    tok = CLIPTokenizer.from_pretrained(base / "tokenizer")
    config = json.loads((base / "text_encoder" / "config.json").read_text())
    assert config["vocab_size"] == len(tok) and config["eos_token_id"] == tok.eos_token_id
    encoded = ids(tok, corpus)
    assert int(encoded.max()) < config["vocab_size"]
    assert [tok.convert_ids_to_tokens(r) for r in encoded.tolist()] == [
        full_tokenizer.convert_ids_to_tokens(r) for r in ids(full_tokenizer, corpus).tolist()
    ]
    trim = json.loads((OUT / "PROVENANCE.json").read_text())["vocabulary_trim"]
    assert (trim["before"], trim["after"]) == (49408, len(tok))

"""Write tests/fixtures/toy: the toy profile's frozen models in fp16, for the learning tests.

    python tests/toy/make_fixture.py models/pretrained    # after `dvc repro prepare_models` with profile: toy
    python tests/toy/make_fixture.py --trim-only tests/fixtures/toy    # trim a written fixture's vocabulary

Copies base/ (Stable Diffusion folder), image_encoder/ (CLIP vision tower) and elite/ (the untrained ELITE
weights the stages start from) from a toy prepare_models output, with every floating-point tensor stored as
fp16 (half the size; the tests load them in fp32), and records where they came from in PROVENANCE.json.
Training them takes prepare_models about 40 CPU-minutes, more than the test suite's budget, so the suite
trains only what it tests (the mappers) and takes the frozen base from here.

The base's vocabulary is trimmed to the words the toy world uses (`trim_vocabulary`, exact on those words: same
tokens, same text encoder outputs): CLIP's 49,408 tokens become 667 (153 of its 48,894 merges), the tokenizer
goes from 3.6 MB to 31 kB and the text encoder (mostly its token embedding) from 6.5 MB to 0.3 MB, each file
under 1 MB. The toy text encoder was only ever trained on toy captions, so the rows dropped were never used.
`--trim-only` trims a fixture written before the trim, in place.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTokenizer

from elite.config import parse_params
from elite.io import atomic_dir
from elite.toy import bank, dreambench, retrieval, world
from elite.train.templates import TEMPLATES

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "toy"
PARTS = ("base", "image_encoder", "elite")
END = "</w>"  # CLIP's end-of-word suffix
PLACEHOLDERS = re.compile(r"\{\d*\}|S\d*\*")  # {0}, {}, S*, S1*: filled with concept words, not tokenized as such
CAPTION_DRAWS = 400  # bank captions drawn to collect their connecting words (a, and, on, the, ...)


def halve(folder: Path) -> None:
    for path in folder.rglob("*.safetensors"):
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(path).items()}
        save_file({k: v.contiguous() for k, v in tensors.items()}, path)


def no_machine_paths(folder: Path) -> None:
    """A config's `_name_or_path` that names where a model was loaded from (an absolute path) becomes the model's
    folder name: no machine path in the repository."""
    for path in folder.rglob("config.json"):
        config = json.loads(path.read_text())
        if str(config.get("_name_or_path", "")).startswith("/"):
            config["_name_or_path"] = path.parent.name
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def prompts_in_tests(folder: Path) -> list[str]:
    """Every string literal in the toy tests that reads as a prompt (starts with "a ")."""
    return [
        node.value
        for path in sorted(folder.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("a ")
    ]


def toy_corpus(repo: Path = REPO) -> list[str]:
    """The texts the toy profile puts through its tokenizer, collected from where they are defined: the world's
    words (classes, colours, patterns, scenes), the bank's captions (drawn: their connecting words), ELITE's
    training templates and the toy profile's scale prefixes, sample, example, pair and extra prompts, the toy
    DreamBench prompt list, the retrieval prompt, and the prompts written in tests/toy. Placeholders are blanked."""
    params = parse_params(yaml.safe_load((repo / "params.yaml").read_text()), "params.yaml", "toy")
    words = [*world.CLASSES, *world.COLOURS, *world.PATTERNS, *world.SCENES]
    rng = np.random.default_rng(0)
    modes = dict(params.toy.caption_modes)
    captions = []
    for k in range(CAPTION_DRAWS):
        spec = world.sample_spec(rng, objects=1 + k % 2)
        captions += [bank.caption(spec, rng, modes, template_p=0.5), bank.full_caption(spec)]
    local = params.train_local
    prompts = [
        *TEMPLATES,
        *local.far_prefixes,
        *local.near_prefixes,
        params.train_global.sample_prompt,
        local.sample_prompt,
        params.register.example_prompt,
        *params.evaluate.pair_prompts,
        *params.evaluate.extra_prompts,
        *dreambench.PROMPTS,
        inspect.signature(retrieval.identity_retrieval).parameters["prompt"].default,
        *prompts_in_tests(repo / "tests" / "toy"),
    ]
    texts = words + captions + [" ".join(PLACEHOLDERS.sub(" ", p).split()) for p in prompts]
    return sorted({t for t in texts if t})


def corpus_words(tokenizer: CLIPTokenizer, texts: list[str]) -> set[str]:
    """The pre-tokenized words (lower-cased, split, byte-level mapped) that CLIP's BPE sees, as the tokenizer
    itself normalizes and splits them."""
    backend = tokenizer.backend_tokenizer
    return {w for t in texts for w, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(t))}


def bpe(word: str, ranks: dict[tuple[str, str], int]) -> tuple[list[str], list[tuple[str, str]]]:
    """CLIP's BPE of one word: (its symbols, the merges applied in order). The last symbol carries </w>; at each
    step the present pair of lowest rank is merged everywhere in the word, until no present pair has a rank."""
    symbols = [*word[:-1], word[-1] + END]
    applied = []
    while len(symbols) > 1:
        best = min(zip(symbols, symbols[1:]), key=lambda p: ranks.get(p, len(ranks)))
        if best not in ranks:
            break
        applied.append(best)
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols, applied


def trimmed_tokens(tokenizer: CLIPTokenizer, texts: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The trimmed vocabulary (in the old ids' order) and merges (in the old rank order) for `texts`.

    Kept: the 512 byte-level symbols (each of the 256 bytes bare and with </w>: any word still tokenizes, into
    smaller pieces), the merges CLIP's BPE applies to a word of `texts` and their results, and the tokenizer's
    added tokens (<|startoftext|>, <|endoftext|>).

    Why every word of `texts` tokenizes exactly as before: BPE merges, at each step, the pair of lowest rank
    among the adjacent pairs present in the word. On the full table every merge chosen for a corpus word is
    kept (that is how the kept set is made), and every other pair present at that step either is not kept or
    ranks higher than the chosen one (else it would have been chosen); the kept merges keep their relative
    order. So on the kept table the lowest-ranked present pair is the same at every step, and the word goes
    through the same merges to the same symbols; when no present pair has a rank in the full table, none has one
    in the kept table (a subset), so it stops at the same point. The symbols are the same strings, so a token's
    new id is the position of that string in the kept vocabulary and its embedding row is the old row of that
    string: the text encoder's output on those words is unchanged."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    ranks = {m: i for i, m in enumerate(merges)}
    used = {m for word in corpus_words(tokenizer, texts) for m in bpe(word, ranks)[1]}
    kept_merges = [m for m in merges if m in used]
    byte_symbols = ByteLevel.alphabet()
    keep = {*byte_symbols, *(s + END for s in byte_symbols), *("".join(m) for m in kept_merges)}
    keep |= {str(t) for t in tokenizer.added_tokens_decoder.values()}
    vocab = tokenizer.get_vocab()
    return sorted(keep, key=lambda t: vocab[t]), kept_merges


def write_tokenizer(old: CLIPTokenizer, tokens: list[str], merges: list[tuple[str, str]], out: Path) -> CLIPTokenizer:
    """A CLIPTokenizer folder (vocab.json, merges.txt, tokenizer_config.json) with `old`'s special tokens and
    length."""
    out.mkdir(parents=True)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    new = CLIPTokenizer(
        str(out / "vocab.json"),
        str(out / "merges.txt"),
        model_max_length=old.model_max_length,
        bos_token=old.bos_token,
        eos_token=old.eos_token,
        unk_token=old.unk_token,
        pad_token=old.pad_token,
    )
    new.save_pretrained(out)
    return CLIPTokenizer.from_pretrained(out)


def remap_text_encoder(folder: Path, rows: list[int], new: CLIPTokenizer) -> None:
    """Token embedding row i := the old row rows[i] (dtype as stored); the config's vocab size and special ids
    follow the new tokenizer (CLIPTextModel's pooled output finds the end token by eos_token_id)."""
    path = folder / "model.safetensors"
    if not path.is_file():
        sys.exit(f"{path}: missing; the text encoder must be one safetensors file to trim its vocabulary")
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    key = next(k for k in tensors if k.endswith("token_embedding.weight"))
    tensors[key] = tensors[key][torch.tensor(rows)].contiguous()
    save_file(tensors, path, metadata=metadata)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        vocab_size=len(rows),
        bos_token_id=new.bos_token_id,
        eos_token_id=new.eos_token_id,
        pad_token_id=new.pad_token_id,
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def trim_vocabulary(base: Path, texts: list[str]) -> dict[str, int]:
    """Trim the Stable Diffusion folder `base` (tokenizer/ and text_encoder/, in place) to the vocabulary `texts`
    need (`trimmed_tokens`); checks that every text tokenizes to the same token strings before and after."""
    old = CLIPTokenizer.from_pretrained(base / "tokenizer")
    tokens, merges = trimmed_tokens(old, texts)
    shutil.rmtree(base / "tokenizer")
    new = write_tokenizer(old, tokens, merges, base / "tokenizer")
    for text in texts:
        before = old.convert_ids_to_tokens(old(text).input_ids)
        after = new.convert_ids_to_tokens(new(text).input_ids)
        if before != after:
            raise ValueError(f"vocabulary trim changed the tokens of {text!r}: {before} -> {after}")
    old_ids = old.get_vocab()
    remap_text_encoder(base / "text_encoder", [old_ids[t] for t in tokens], new)
    return {"before": len(old_ids), "after": len(tokens), "merges_kept": len(merges)}


def provenance_with_trim(provenance: dict, trim: dict[str, int]) -> dict:
    """PROVENANCE.json with the trim recorded (a second trim keeps the first's size before)."""
    before = provenance.get("vocabulary_trim", {}).get("before", trim["before"])
    record = {"by": "tests/toy/make_fixture.py trim_vocabulary", **trim, "before": before}
    return {**provenance, "vocabulary_trim": record}


def main(src: Path) -> None:
    if not (src / "base" / "toy_world.json").is_file():
        sys.exit(f"{src}: not a toy prepare_models output (no base/toy_world.json); run it with profile: toy")
    tmp = OUT.with_name("toy.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for part in PARTS:
        shutil.copytree(src / part, tmp / part)
    halve(tmp)
    no_machine_paths(tmp)
    trim = trim_vocabulary(tmp / "base", toy_corpus())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True).stdout.strip()
    gate = src / "base" / "toy_gate.json"
    provenance = {
        "made_by": "tests/toy/make_fixture.py",
        "source": src.name,  # the folder's name only: no machine path in the repository
        "commit": commit,
        "torch": torch.__version__,
        "gate": json.loads(gate.read_text()) if gate.is_file() else None,
    }
    provenance = provenance_with_trim(provenance, trim)
    (tmp / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
    shutil.rmtree(OUT, ignore_errors=True)
    tmp.rename(OUT)
    print(f"wrote {OUT}")


def trim_only(fixture: Path) -> None:
    """Trim the vocabulary of a written fixture in place (all or nothing: a copy is trimmed, then renamed)."""
    if not (fixture / "base" / "tokenizer").is_dir() or not (fixture / "PROVENANCE.json").is_file():
        sys.exit(f"{fixture}: not a toy fixture (no base/tokenizer or PROVENANCE.json)")
    with atomic_dir(fixture) as tmp:
        shutil.copytree(fixture, tmp, dirs_exist_ok=True)
        trim = trim_vocabulary(tmp / "base", toy_corpus())
        provenance = provenance_with_trim(json.loads((tmp / "PROVENANCE.json").read_text()), trim)
        (tmp / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"trimmed {fixture}: vocabulary {trim['before']} -> {trim['after']} tokens")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--trim-only":
        trim_only(Path(sys.argv[2]))
    elif len(sys.argv) == 2:
        main(Path(sys.argv[1]))
    else:
        sys.exit(
            "usage: python tests/toy/make_fixture.py MODELS_DIR   (a toy prepare_models output)\n"
            "       python tests/toy/make_fixture.py --trim-only FIXTURE_DIR"
        )

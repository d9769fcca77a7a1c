"""The mapper's gate, the step after the base's (elite.toy.gate): does the word that ELITE encodes from one
render of a concept draw that concept? Each concept is encoded from one fresh render (its exact mask), then
"a S* on the <scene>" is sampled with the evaluation's sampler and read by the probes, on *seen* concepts (the
mapper trained on their identities) and on the held-out ones. Seen concepts tell "the mapper did not learn the
map" from "the map does not generalise"; the base gate's named rows are the ceiling of both.

`--lam 0` (the default) judges the global word w0 alone (stage 1, or ELITE without its local branch);
`--all-words` injects all the global words, as stage 1 trains them (the paper's [v] of Table 1): the gap
between the two shows how much of the concept the auxiliary words hold.
Run: `python -m elite.toy.word_gate --models models/pretrained --weights models/elite_global`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from elite.concepts import Concept as EncodedConcept
from elite.errors import EliteError
from elite.io import read_json
from elite.models.local_control import Lam
from elite.pipeline import ElitePipeline
from elite.toy.gate import accuracies, gate_rows, seen_concepts
from elite.toy.heldout import Concept, held_out_concepts
from elite.toy.probes import load_probes
from elite.toy.retrieval import concept_shots


@dataclass(frozen=True)
class WordSampling:
    lam: Lam = 0.0  # local branch weight (0: the global word alone), or a per-block dict
    all_words: bool = False  # every global word at S*, as stage 1 trains (the paper's [v])
    guidance: float = 4.0
    steps: int = 25
    seed: int = 0
    attribute_scale: float | None = None  # draw the attribute word (attribute_word) instead of the encoded one


def attribute_word(pipe, concept: Concept, scale: float) -> torch.Tensor:
    """scale x (e(colour) + e(pattern) + e(class)): the text encoder's input embeddings of the concept's words,
    each word's tokens summed. (D,)"""
    table = pipe.text_encoder.get_input_embeddings().weight
    words = f"{concept.colour} {concept.pattern} {concept.cls}"
    return scale * table[pipe.tokenizer(words, add_special_tokens=False).input_ids].sum(0)


def word_concept(pipe, concept: Concept, how: WordSampling, size: int, seed: int) -> EncodedConcept:
    """What S* is for one concept: the word ELITE encodes from one render of its own, or the attribute word."""
    if how.attribute_scale is None:
        shot = concept_shots(concept, 1, size, seed)[0]
        return pipe.encode_concept(shot.image, mask=shot.mask)
    word = attribute_word(pipe, concept, how.attribute_scale)
    words = word.new_zeros(1, len(pipe.elite.config.feature_layers), word.shape[0])  # w0 only: the rest unused
    words[0, 0] = word
    return EncodedConcept(words=words, local_tokens=None)


@torch.no_grad()
def sample_words(
    pipe: ElitePipeline, concepts: list[Concept], n: int, size: int, how: WordSampling
) -> tuple[torch.Tensor, list[dict]]:
    """n rows cycling through `concepts` and the scenes (elite.toy.gate.gate_rows); each concept encoded from
    one render of its own (seeded by its index) and sampled with its rows' prompts. Images in [-1, 1]."""
    rows = gate_rows(concepts, n, named=False)
    images = torch.zeros(n, 3, size, size)
    for k, concept in enumerate(concepts):
        mine = [i for i in range(n) if i % len(concepts) == k]
        if not mine:
            continue
        out = pipe(
            [f"a S* on the {rows[i]['scene']}" for i in mine],
            word_concept(pipe, concept, how, size, how.seed + 100 + k),
            lam=how.lam,
            num_inference_steps=how.steps,
            guidance_scale=how.guidance,
            generator=torch.Generator().manual_seed(how.seed + k),
            output_type="pt",
            all_words=how.all_words,
        ).images
        images[mine] = out.float().cpu() * 2 - 1
    return images, rows


def load_judged(models: Path, weights: Path) -> tuple[ElitePipeline, dict]:
    """The toy base with ELITE `weights` (fp32, no progress bars) and the probes that judge its images."""
    pipe = ElitePipeline.from_pretrained(models / "base", elite_weights=weights, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe, load_probes(models / "probes")


def judge_words(pipe: ElitePipeline, probes: dict, held_out: list[Concept], n: int, how: WordSampling) -> dict:
    """Per set (seen, held-out concepts): each attribute's and the joint accuracy of n sampled images."""
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    result: dict = asdict(how)
    for name, concepts in (("seen", seen_concepts(held_out)), ("held_out", held_out)):
        result[name] = accuracies(probes, *sample_words(pipe, concepts, n, size, how))
    return result


def measure_words(models: Path, weights: Path, held_out: list[Concept], n: int, how: WordSampling) -> dict:
    return judge_words(*load_judged(models, weights), held_out, n, how)


FIX = "--models must be a toy models folder (`make run` on the toy profile writes models/pretrained)"


def sampling_parser(doc: str | None, weights: str, images: str) -> argparse.ArgumentParser:
    """The gate tools' shared options: the models and weights folders, images per set, sampler, CPU threads."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("models/pretrained"))
    parser.add_argument("--weights", type=Path, default=Path(weights))
    parser.add_argument("--images", type=int, default=96, help=images)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return parser


def held_out_of(models: Path) -> list[Concept]:
    """The held-out concepts a toy models folder was built with (base/toy_world.json); a folder without it is a
    one-line error."""
    toy = read_json(models / "base" / "toy_world.json", dict, "toy world", FIX)
    return held_out_concepts(toy["held_out"])


def main(argv: list[str] | None = None) -> int:
    parser = sampling_parser(__doc__, "models/elite_global", "images per set (seen, held-out)")
    parser.add_argument("--lam", type=float, default=0.0, help="local branch weight (0: the global word alone)")
    parser.add_argument("--all-words", action="store_true", help="inject every global word, as stage 1 trains")
    parser.add_argument(
        "--attribute-words",
        type=float,
        metavar="SCALE",
        help="draw SCALE x (e(colour) + e(pattern) + e(class)) from the vocabulary instead of the encoded word",
    )
    args = parser.parse_args(argv)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    how = WordSampling(args.lam, args.all_words, args.guidance, args.steps, attribute_scale=args.attribute_words)
    try:
        result = measure_words(args.models, args.weights, held_out_of(args.models), args.images, how)
    except EliteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The held-out concepts of the toy world: the one home of the rule that says which concepts ELITE is judged on,
what no model it reads may see, and what a single attribute alone could score on them.

A concept is (class, colour, pattern); its *identity* is (colour, pattern). `toy.held_out` lists the concepts.
No render whose object has a held-out identity (in any class) reaches the training of a model ELITE reads or of
a probe; the base UNet's captions may name the held-out *words* (it knows "red" and "striped" from other
objects), never a held-out render. The set is chosen so that no single attribute solves it: every held-out
colour and every held-out pattern occurs in at least two held-out concepts, so knowing one attribute leaves at
least two candidates (`single_attribute_oracles`); and every held-out colour keeps two patterns in training, so no
model learns "red" as "red and plain" (measured: with one pattern left, both the probes and the base read a
held-out colour's pattern as the colour's training pattern).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from elite.errors import EliteError
from elite.toy.world import CLASSES, COLOURS, PATTERNS

ATTRIBUTES = ("cls", "colour", "pattern")


@dataclass(frozen=True)
class Concept:
    cls: str
    colour: str
    pattern: str

    @property
    def identity(self) -> tuple[str, str]:
        return self.colour, self.pattern

    @property
    def name(self) -> str:
        """DreamBench-style subject name: red_striped_ball."""
        return f"{self.colour}_{self.pattern}_{self.cls}"

    @property
    def words(self) -> str:
        """The concept written out: 'red striped ball'."""
        return f"{self.colour} {self.pattern} {self.cls}"


def held_out_concepts(held_out: list[list[str]]) -> list[Concept]:
    """`toy.held_out` ([class, colour, pattern] triples) as concepts; unknown words are a one-line error."""
    vocab = {"cls": CLASSES, "colour": tuple(COLOURS), "pattern": PATTERNS}
    concepts = []
    for entry in held_out:
        if len(entry) != 3:
            raise EliteError(f"params.yaml: toy.held_out entry {entry!r} must be [class, colour, pattern]")
        concept = Concept(*entry)
        for attr in ATTRIBUTES:
            if getattr(concept, attr) not in vocab[attr]:
                raise EliteError(
                    f"params.yaml: toy.held_out {entry!r}: {attr} {getattr(concept, attr)!r} is not one of "
                    f"{', '.join(vocab[attr])}"
                )
        concepts.append(concept)
    for colour in sorted({c.colour for c in concepts}):
        left = [p for p in PATTERNS if (colour, p) not in {c.identity for c in concepts}]
        if len(left) < 2:
            raise EliteError(
                f"params.yaml: toy.held_out leaves {colour} with {len(left)} pattern(s) in training "
                f"({', '.join(left) or 'none'}); the models would learn that {colour} implies its pattern: hold out "
                f"fewer patterns of {colour}"
            )
    return concepts


def held_out_identities(held_out: list[list[str]]) -> frozenset[tuple[str, str]]:
    """The (colour, pattern) identities no training render may carry."""
    return frozenset(c.identity for c in held_out_concepts(held_out))


def single_attribute_oracles(concepts: list[Concept]) -> dict[str, float]:
    """Per attribute: the best joint score (class, colour and pattern all right) that knowing only that attribute
    of each concept can reach, i.e. picking among the held-out concepts that share it: the mean over concepts of
    1 / (number of concepts with the same value)."""
    out = {}
    for attr in ATTRIBUTES:
        counts = Counter(getattr(c, attr) for c in concepts)
        out[attr] = sum(1 / counts[getattr(c, attr)] for c in concepts) / len(concepts)
    return out

"""Where the concepts go in a prompt: S* for one concept (or a standalone S when allowed), S1*, S2*, ... for
several, each once. Plain text work with one-line errors, cheap enough to check a prompt before any model loads
(elite.models.text tokenizes around what this finds)."""

from __future__ import annotations

import re

from elite.errors import EliteError

PLACEHOLDER = "S*"
_STAR = re.compile(r"(?<![\w*])S\*(?![\w*])")
_STAR_OR_S = re.compile(r"(?<![\w*])S(?:\*)?(?![\w*])")
_NUMBERED = re.compile(r"(?<![\w*])S(\d+)\*(?![\w*])")  # S1*, S2*: one per concept


SHOWN_CHARS = 80  # a longer prompt is named by its length in messages, not echoed


def shown(prompt: str) -> str:
    """The prompt as error messages quote it: repr() when short, else its length (one readable line)."""
    return repr(prompt) if len(prompt) <= SHOWN_CHARS else f"of {len(prompt):,} characters"


def placeholder_names(num_concepts: int) -> list[str]:
    """How the prompt names the concepts: S* for one, S1* S2* ... for several."""
    return [PLACEHOLDER] if num_concepts == 1 else [f"S{i}*" for i in range(1, num_concepts + 1)]


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

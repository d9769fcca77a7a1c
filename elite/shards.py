"""`--shard i/n`: the deterministic slice of a stage's work that one worker takes."""

from __future__ import annotations

import re

from elite.errors import EliteError


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """(i, n) from "i/n" with 0 <= i < n; None when no shard was asked for."""
    if text is None:
        return None
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise EliteError(f"--shard {text}: write i/n with 0 <= i < n, e.g. --shard 0/4")
    return int(m.group(1)), int(m.group(2))

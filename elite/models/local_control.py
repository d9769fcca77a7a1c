"""Where and when the local branch acts: lambda per cross-attention block, and a step range.

Lambda per block is a dict shaped like diffusers IP-Adapter's per-block scale (`set_ip_adapter_scale`):

    {"down": 0.8, "mid": 0.0, "up": {"block_1": 0.8, "block_2": [0.0, 0.8, 0.8]}}

"down" / "up": one number for all of that part, or per block ("block_<i>": the UNet's down_blocks.<i> /
up_blocks.<i>) one number or one number per attention of the block; "mid": one number. As in diffusers, a
part or block left out gets 0 (no local term there). A plain number is the same lambda everywhere.

The step range `(start, end)` are fractions of the denoising (as diffusers' ControlNet
`control_guidance_start/end`): step i of N has the local branch when start <= i/N and (i+1)/N <= end, and
none otherwise (lambda 0). (0, 1) is every step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from elite.errors import EliteError

PARTS = ("down", "mid", "up")
BLOCK = re.compile(r"block_(\d+)")
LAM_HELP = "a number >= 0 or a dict {down, mid, up} (as diffusers' set_ip_adapter_scale)"
Lam = float | Mapping[str, Any]


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise EliteError(f"{field}: expected a finite number >= 0, got {value!r}")
    return float(value)


def check_lam(lam: Any, field: str = "lam") -> None:
    """One-line errors for lambda: a number, or a per-block dict (its shape and numbers; the blocks
    themselves are checked against the UNet by `check_lam_blocks`)."""
    if not isinstance(lam, Mapping):
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
            raise EliteError(f"{field} must be a finite number >= 0 (paper: 0.8 generation, 0.6 editing), got {lam}")
        return
    unknown = [k for k in lam if k not in PARTS]
    if unknown or not lam:
        raise EliteError(
            f"{field}: unknown block {unknown[0] if unknown else None!r}; the keys are {', '.join(PARTS)}"
        )
    for part, value in lam.items():
        if part == "mid" or not isinstance(value, Mapping):
            _number(value, f"{field}.{part}")
            continue
        for block, scale in value.items():
            name = f"{field}.{part}.{block}"
            if not isinstance(block, str) or not BLOCK.fullmatch(block):
                raise EliteError(f"{name}: blocks are named block_0, block_1, ... (the UNet's {part}_blocks.<i>)")
            scales = scale if isinstance(scale, (list, tuple)) else [scale]
            if not scales:
                raise EliteError(f"{name}: expected a number or one number per attention of the block, got []")
            for i, s in enumerate(scales):
                _number(s, name if len(scales) == 1 and not isinstance(scale, (list, tuple)) else f"{name}[{i}]")


def position(layer: str) -> tuple[str, int, int]:
    """(part, block, attention) of a cross-attention layer key such as down_blocks_1_attentions_0_..._attn2."""
    parts = layer.split("_")
    if parts[:2] == ["mid", "block"]:
        return "mid", 0, int(parts[3])
    if parts[0] in ("down", "up") and parts[1] == "blocks" and parts[3] == "attentions":
        return parts[0], int(parts[2]), int(parts[4])
    raise EliteError(f"lam per block: cannot place the cross-attention layer {layer!r} in down/mid/up")


def check_lam_blocks(lam: Lam, layers: Iterable[str], field: str = "lam") -> None:
    """The blocks named in a per-block lambda exist in this UNet (with cross-attention), and a list per block
    has one number per attention of that block."""
    if not isinstance(lam, Mapping):
        return
    counts: dict[tuple[str, int], int] = {}
    for layer in layers:
        part, block, attention = position(layer)
        counts[(part, block)] = max(counts.get((part, block), 0), attention + 1)
    for part in ("down", "up"):
        blocks = lam.get(part)
        for block, scale in (blocks if isinstance(blocks, Mapping) else {}).items():
            index = int(BLOCK.fullmatch(block).group(1))  # type: ignore[union-attr]  # checked by check_lam
            have = sorted(f"block_{b}" for p, b in counts if p == part)
            if (part, index) not in counts:
                raise EliteError(
                    f"{field}.{part}.{block}: this UNet has no cross-attention there; its {part} blocks with "
                    f"cross-attention are {', '.join(have)}"
                )
            if isinstance(scale, (list, tuple)) and len(scale) != counts[(part, index)]:
                raise EliteError(
                    f"{field}.{part}.{block}: {len(scale)} numbers for {counts[(part, index)]} attentions; give one "
                    f"per attention, or one number for the block"
                )


def block_rows(layers: Iterable[str], lam: float) -> dict[str, Lam]:
    """The lambda sweep by block over these cross-attention layers (KVProjections keys, in UNet order): row name ->
    lambda. `global word only` (0 everywhere), `every block` (`lam` everywhere), then `lam` on one part (down, mid,
    up) and on one block of a part that has several (`up.block_1`, ...), 0 elsewhere."""
    blocks: dict[str, set[int]] = {}
    for layer in layers:
        part, block, _ = position(layer)
        blocks.setdefault(part, set()).add(block)
    rows: dict[str, Lam] = {"global word only": 0.0, "every block": lam}
    for part in PARTS:
        if part not in blocks:
            continue
        rows[part] = {part: lam}
        if part != "mid" and len(blocks[part]) > 1:
            rows.update({f"{part}.block_{b}": {part: {f"block_{b}": lam}} for b in sorted(blocks[part])})
    return rows


def layer_lambda(lam: Mapping[str, Any], layer: str) -> float:
    """The lambda of one cross-attention layer (its KVProjections key) under a per-block dict."""
    part, block, attention = position(layer)
    value = lam.get(part, 0.0)
    if not isinstance(value, Mapping):
        return float(value)
    scale = value.get(f"block_{block}", 0.0)
    return float(scale[attention] if isinstance(scale, (list, tuple)) else scale)


def lam_is_zero(lam: Lam) -> bool:
    """Lambda 0 everywhere (then there is no local branch at all)."""
    if not isinstance(lam, Mapping):
        return lam <= 0

    def leaves(value: Any) -> Iterable[float]:
        if isinstance(value, Mapping):
            for v in value.values():
                yield from leaves(v)
        elif isinstance(value, (list, tuple)):
            yield from value
        else:
            yield value

    return all(v == 0 for v in leaves(lam))


def check_local_steps(steps: Sequence[float], field: str = "local_steps") -> tuple[float, float]:
    """(start, end) fractions of the denoising with 0 <= start <= end <= 1."""
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or len(steps) != 2:
        raise EliteError(f"{field}: expected (start, end), two fractions of the denoising, got {steps!r}")
    start, end = (_number(s, field) for s in steps)
    if not start <= end <= 1:
        raise EliteError(f"{field}: expected 0 <= start <= end <= 1 (fractions of the denoising), got {steps!r}")
    return start, end


def active_steps(count: int, steps: Sequence[float]) -> list[bool]:
    """Per denoising step, whether the local branch acts (diffusers ControlNet's start/end rule)."""
    start, end = check_local_steps(steps)
    return [start <= i / count and (i + 1) / count <= end for i in range(count)]

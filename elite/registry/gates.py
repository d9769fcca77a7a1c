"""Promotion gates: compare a new version's metrics with the current champion's, as params.yaml says.

A gate names a metric by its dotted path in the metrics JSON (`overall.clip_t`; list items by index).
It passes when the value is not worse than the champion's by more than `tolerance`, reaches the
absolute `limit` when one is set, and reaches the profile's fixed `floor` (the committed reference value,
within `floor_tolerance`) when params register.floor names the metric: the champion is only ever the
same profile's (one registered model per profile), and the floor keeps a drift of small regressions,
each within tolerance of the last champion, from walking it down. Without a champion (the first
registration) only the limit and the floor apply. All gates must pass for the champion alias to move.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from elite.config.register import Gate
from elite.errors import EliteError
from elite.io import read_json

METRIC_PREFIX = "dreambench."  # MLflow metric key = prefix + sanitised dotted path


def load_metrics(path: str | Path) -> dict:
    return read_json(
        path,
        dict,
        "metrics file",
        "run the evaluate stage first (`dvc repro evaluate`) or point register.metrics at a DreamBench metrics JSON",
    )


def numeric_leaves(data, prefix: str = "") -> dict[str, float]:
    """Every finite number in a nested JSON value, keyed by dotted path (booleans excluded)."""
    out: dict[str, float] = {}
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        path = f"{prefix}{key}"
        if isinstance(value, (dict, list)):
            out.update(numeric_leaves(value, path + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[path] = float(value)
    return out


def metric_key(path: str) -> str:
    """The MLflow metric name for a dotted metrics path (characters MLflow refuses become '_')."""
    return METRIC_PREFIX + re.sub(r"[^A-Za-z0-9_\-. /]", "_", path)


def lookup(metrics: dict, path: str, source: str) -> float:
    leaves = numeric_leaves(metrics)
    if path not in leaves:
        near = sorted(leaves)[:8]
        raise EliteError(
            f"{source}: no number at {path!r} (params register.gates); numbers there: "
            f"{', '.join(near) or 'none'}{' ...' if len(leaves) > 8 else ''}"
        )
    return leaves[path]


@dataclass
class GateResult:
    metric: str
    value: float
    champion: float | None
    tolerance: float
    limit: float | None
    floor: float | None
    passed: bool
    reason: str


def check_gate(
    gate: Gate,
    value: float,
    champion: float | None,
    champion_label: str,
    floor: float | None = None,
    floor_tolerance: float = 0.0,
) -> GateResult:
    sign = 1.0 if gate.higher_is_better else -1.0
    better = ">=" if gate.higher_is_better else "<="
    worse = "<" if gate.higher_is_better else ">"
    problems, notes = [], []
    if floor is not None:
        pm = "-" if gate.higher_is_better else "+"
        if sign * (value - (floor - sign * floor_tolerance)) < -1e-12:
            problems.append(f"{gate.metric} {value:.4f} {worse} floor {floor:.4f} {pm} tolerance {floor_tolerance:g}")
        else:
            notes.append(f"{better} floor {floor:.4f} {pm} {floor_tolerance:g}")
    if gate.limit is not None:
        if sign * (value - gate.limit) < 0:
            problems.append(f"{gate.metric} {value:.4f} {worse} limit {gate.limit:.4f}")
        else:
            notes.append(f"{better} limit {gate.limit:.4f}")
    if champion is None:
        notes.append(f"no {champion_label} value to compare")
    else:
        bound = champion - sign * gate.tolerance
        if sign * (value - bound) < -1e-12:
            problems.append(
                f"{gate.metric} {value:.4f} {worse} {champion_label} {champion:.4f} "
                f"{'-' if gate.higher_is_better else '+'} tolerance {gate.tolerance:g}"
            )
        else:
            notes.append(
                f"{better} {champion_label} {champion:.4f} {'-' if gate.higher_is_better else '+'} {gate.tolerance:g}"
            )
    passed = not problems
    reason = "; ".join(problems) if problems else f"{gate.metric} {value:.4f} " + ", ".join(notes)
    return GateResult(gate.metric, value, champion, gate.tolerance, gate.limit, floor, passed, reason)


@dataclass
class Decision:
    promote: bool
    reason: str
    gates: list[GateResult]

    def as_dict(self) -> dict:
        return {"promote": self.promote, "reason": self.reason, "gates": [asdict(g) for g in self.gates]}


def decide(
    gates: list[Gate],
    metrics: dict,
    champion_metrics: dict[str, float] | None,
    champion_label: str,
    source: str,
    floor: dict[str, float] | None = None,
    floor_tolerance: float = 0.0,
) -> Decision:
    """Apply every gate. `champion_metrics` maps MLflow metric keys (see `metric_key`) to values;
    None when there is no champion yet. `floor`: gate metric -> the profile's fixed reference value."""
    results = []
    floor = floor or {}
    for gate in gates:
        value = lookup(metrics, gate.metric, source)
        champ = None if champion_metrics is None else champion_metrics.get(metric_key(gate.metric))
        results.append(check_gate(gate, value, champ, champion_label, floor.get(gate.metric), floor_tolerance))
    failed = [r for r in results if not r.passed]
    if failed:
        return Decision(False, "gates failed: " + "; ".join(r.reason for r in failed), results)
    head = "no champion yet" if champion_metrics is None else f"not worse than {champion_label}"
    detail = "; ".join(r.reason for r in results) or "no gates configured"
    return Decision(True, f"{head}: {detail}", results)

"""`elite seeds`: the evaluation's numbers over ELITE's training seeds, as DVC experiments.

    elite seeds queue --seeds 1 2 3     # one queued experiment per seed: seed-<s>, train_global/train_local.seed=s
                                        # (the stages the seeds do not reach are skipped, not rerun;
                                        #  --replace first removes finished experiments of those names)
    dvc queue start -j 1                # runs them (each in a copy of the workspace; the cold run is not touched)
    elite seeds summary                 # every experiment named seed-* (or: elite seeds summary EXP EXP ...)

`summary` reads `dvc exp show --json` and writes, for each key metric of metrics/dreambench.json (`overall.*`,
the class-word and oracle rows), the mean, sample standard deviation, min, max and count over the experiments
to metrics/seeds.json, and prints them as a table. A claim "A beats B" over training seeds needs the difference
of the means to exceed both spreads; within one run, metrics/dreambench.json's `spread` block gives the
bootstrap interval over prompts and generation seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from elite.commands.experiments import dvc
from elite.errors import EliteError
from elite.io import write_json

PREFIX = "seed-"
METRICS_FILE = "metrics/dreambench.json"
ROWS = (
    "elite",
    "global",
    "baseline",
    "named",
)  # elite.evaluate.reference.ROW_BLOCKS: ELITE, global only, class word, named
KEYS = ("identity_acc", "class_acc", "colour_acc", "pattern_acc", "scene_acc", "clip_t", "clip_i", "dino_i")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "seeds",
        help="the evaluation over several ELITE training seeds: queue the experiments, then summarise them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("queue", help="queue one DVC experiment per training seed (dvc exp run --queue)")
    q.add_argument("--seeds", type=int, nargs="+", required=True, help="training seeds, e.g. 1 2 3")
    q.add_argument("--replace", action="store_true", help="remove finished experiments of the same names first")
    q.set_defaults(func=queue_cmd)
    s = actions.add_parser("summary", help="mean and spread of the key metrics over experiments")
    s.add_argument("experiments", nargs="*", help=f"experiment names (default: every one named {PREFIX}*)")
    s.add_argument("--out", default="metrics/seeds.json", help="JSON written (default: %(default)s)")
    s.set_defaults(func=summary_cmd)


def queue_cmd(args) -> None:
    if len(set(args.seeds)) != len(args.seeds):
        raise EliteError(f"--seeds {' '.join(map(str, args.seeds))}: a seed is repeated; give each seed once")
    names = [f"{PREFIX}{seed}" for seed in args.seeds]
    taken = sorted(set(names) & set(dvc("exp", "ls", "--all-commits", "--name-only").split()))
    if taken and not args.replace:
        raise EliteError(
            f"experiment(s) {', '.join(taken)} already exist (dvc exp ls -A): "
            "add --replace to run them again, or `dvc exp remove` them"
        )
    if taken:
        dvc("exp", "remove", *taken)
    for seed, name in zip(args.seeds, names):
        sets = [f"{stage}.seed={seed}" for stage in ("train_global", "train_local")]
        # no --force: it would rerun every stage (prepare_models too); unchanged stages are skipped
        dvc("exp", "run", "--queue", "--name", name, *(a for s in sets for a in ("-S", s)))
        print(f"queued {name}: {', '.join(sets)}")
    print("run them with `dvc queue start -j 1` (one at a time on one machine); then `elite seeds summary`")


def experiment_metrics(shown: list) -> dict[str, dict]:
    """name -> metrics/dreambench.json of each experiment in `dvc exp show --json` output."""
    found = {}
    for rev in shown:
        for group in rev.get("experiments") or []:
            revs = group.get("revs") or []
            name = group.get("name") or (revs[0].get("name") if revs else None)
            data = (
                ((revs[0].get("data") or {}).get("metrics") or {}).get(METRICS_FILE, {}).get("data") if revs else None
            )
            if name and data:
                found[name] = data
    return found


def summarise(runs: dict[str, dict]) -> dict[str, dict]:
    """`row.key` -> {mean, sd, min, max, n, values} over the runs that report it (sd: n-1; 0.0 for one run;
    values in the runs' order)."""
    from elite.evaluate.reference import row_block, row_path

    table = {}
    for row in ROWS:
        blocks = [row_block(m, row) or {} for m in runs.values()]
        for key in KEYS:
            values = [float(b[key]) for b in blocks if isinstance(b.get(key), (int, float))]
            if values:
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                spread = {"mean": statistics.mean(values), "sd": sd, "min": min(values), "max": max(values)}
                table[".".join((*row_path(row), key))] = {**spread, "n": len(values), "values": values}
    return table


def summary_cmd(args) -> None:
    runs = experiment_metrics(json.loads(dvc("exp", "show", "--json", "--all-commits")))
    names = args.experiments or sorted(n for n in runs if n.startswith(PREFIX))
    missing = [n for n in names if n not in runs]
    if missing:
        raise EliteError(f"no {METRICS_FILE} for experiment(s) {', '.join(missing)}: see `dvc exp show` (finished?)")
    if not names:
        raise EliteError(f"no experiment named {PREFIX}*: queue them with `elite seeds queue --seeds 1 2 3`")
    table = summarise({n: runs[n] for n in names})
    write_json(Path(args.out), {"experiments": names, "metrics": table})
    print(f"{len(names)} experiments: {', '.join(names)} -> {args.out}")
    print("| metric | mean | sd | min | max | n |\n|---|---|---|---|---|---|")
    for name, s in table.items():
        print(f"| {name} | {s['mean']:.3f} | {s['sd']:.3f} | {s['min']:.3f} | {s['max']:.3f} | {s['n']} |")

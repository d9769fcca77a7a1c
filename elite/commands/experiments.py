"""Commands that read DVC experiments for people (not stages: they run `dvc`, which a stage must never do).

`plots`: the pipeline's plots as static SVG/PNG files rendered from DVC's own Vega-Lite specs with
vl-convert (no browser, no CDN: viewable offline). `compare`: `dvc exp show` cut to a table a person can
read. `metrics-diff`: `dvc metrics diff` between two revisions of one profile (a smoke experiment against
the toy reference is refused, naming how to pick two of one profile).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

from elite.errors import EliteError, last_line

# `make compare`: the columns always shown (regexes on DVC's column names) ...
COMPARE_KEEP = [
    "Experiment$",
    "Created$",
    r"overall\.(clip_t|clip_i|dino_i|identity_acc)$",
    r".*final_loss$",
    r".*register\.json:decision$",
    r"decision$",
]
# ... and the detail dropped (the other changed params and metrics stay): deps hashes, per-subject / per-family /
# sweep / timing metrics, the 95% intervals and the toy probe checks, the registry's ids
COMPARE_DROP = [
    r"(data|models|elite)/",
    r"(metrics/dreambench\.json:)?(subjects|families|sweep|table2|pairs|timing|context|images|spread|probes|oracles)\b",
    r"(metrics/register\.json:)?(gates|reason|run_id|logged_model_uri|model_uri|evaluation_run_id|aliases)\b",
    r"(metrics/train_(global|local)\.json:)?(first_loss|images_per_second|wall_seconds|resumed_from_step|stage)$",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plots",
        help="the pipeline's plots as static SVG/PNG files (offline), for the workspace or given revisions",
        description="Render DVC's plots (dvc.yaml: training losses, the lambda sweep) of the workspace, or of "
        "REV... side by side (commits, branches, experiment names), to static files with vl-convert.",
    )
    p.add_argument("revs", nargs="*", metavar="REV", help="revisions to compare (default: the workspace)")
    p.add_argument("--out", default="dvc_plots/static", help="output folder (default: %(default)s)")
    p.add_argument("--format", choices=["svg", "png"], default="svg", help="file format (default: %(default)s)")
    p.set_defaults(func=plots_cmd)

    c = sub.add_parser(
        "compare",
        help="DVC experiments side by side: the params that differ and the key metrics, as a markdown table",
        description="`dvc exp show --only-changed --md` with the key metrics kept and deps and per-subject "
        "detail dropped; extra arguments go to `dvc exp show` (e.g. -n 3, --sort-by overall.clip_t).",
    )
    c.add_argument("extra", nargs=argparse.REMAINDER, help="more `dvc exp show` options")
    c.set_defaults(func=compare_cmd)

    d = sub.add_parser(
        "metrics-diff",
        help="dvc metrics diff between two revisions of the same profile",
        description="`dvc metrics diff A B` (default: HEAD and the workspace), refused when A and B were run "
        "on different profiles: a smoke experiment is not compared with the toy reference.",
    )
    d.add_argument("a", nargs="?", default="HEAD", help="old revision (default: %(default)s)")
    d.add_argument("b", nargs="?", default="workspace", help="new revision (default: %(default)s)")
    d.add_argument("--all", action="store_true", help="every metric, not only the key ones")
    d.set_defaults(func=metrics_diff_cmd)


def run_dvc(
    args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`dvc ARGS` with this interpreter's DVC (`python -m dvc`, the environment's own), output captured."""
    if importlib.util.find_spec("dvc") is None:
        raise EliteError("the `dvc` command is not installed in this environment; run `make setup`")
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def dvc(*args: str) -> str:
    """`dvc ARGS` in the current folder, its stdout; a failure is one EliteError line."""
    proc = run_dvc(list(args))
    if proc.returncode != 0:
        raise EliteError(f"dvc {' '.join(args)} failed: {last_line(proc)}")
    return proc.stdout


def plots_cmd(args) -> None:
    import vl_convert as vlc

    revs = [r for r in args.revs]
    shown = json.loads(dvc("plots", "diff", *revs, "--json") if revs else dvc("plots", "show", "--json"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, items in sorted(shown.get("data", {}).items()):
        for i, item in enumerate(x for x in items if x.get("type") == "vega"):
            spec = item["content"]
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + (f"-{i}" if i else "")
            path = out / f"{stem}.{args.format}"
            data = vlc.vegalite_to_svg(spec).encode() if args.format == "svg" else vlc.vegalite_to_png(spec, scale=2)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            written.append(path)
    if not written:
        raise EliteError("no plots to render: dvc.yaml names none, or these revisions have none")
    print(f"{len(written)} plots ({', '.join(revs) or 'workspace'}) -> {out}/: {', '.join(p.name for p in written)}")


def compare_cmd(args) -> None:
    extra = [a for a in args.extra if a != "--"]
    keep = [arg for pattern in COMPARE_KEEP for arg in ("--keep", pattern)]
    drop = [arg for pattern in COMPARE_DROP for arg in ("--drop", pattern)]
    print(dvc("exp", "show", "--only-changed", "--md", "--no-pager", *keep, *drop, *extra), end="")


def profile_at(rev: str) -> str:
    """The params.yaml profile of a revision (workspace, commit, branch or experiment name)."""
    if rev == "workspace":
        from elite.config import load_params

        return load_params().profile
    shown = json.loads(dvc("params", "diff", rev, "--all", "--json", "--targets", "params.yaml"))
    entry = shown.get("params.yaml", {}).get("profile")
    if entry is None:
        raise EliteError(f"{rev}: no `profile` in its params.yaml")
    return entry["old"]


def metrics_diff_cmd(args) -> None:
    a, b = profile_at(args.a), profile_at(args.b)
    if a != b:
        raise EliteError(
            f"{args.a} ran the {a} profile, {args.b} the {b} profile: compare like with like; name two revisions of "
            f"one profile (`elite metrics-diff A B`, e.g. two experiments from `dvc exp show`), or pass them to "
            f"`dvc metrics diff` yourself"
        )
    revs = [] if (args.a, args.b) == ("HEAD", "workspace") else [args.a] + ([] if args.b == "workspace" else [args.b])
    keys = (
        []
        if args.all
        else ["--targets", "metrics/dreambench.json", "metrics/train_global.json", "metrics/train_local.json"]
    )
    out = dvc("metrics", "diff", *revs, "--md", *keys)
    if not args.all:  # the key rows only: overall scores and training losses
        key = re.compile(r"\| (overall\.|final_loss|learning_rate)")
        out = "\n".join(line for i, line in enumerate(out.splitlines()) if i < 2 or key.search(line)) + "\n"
    print(f"profile {a}: {args.a} -> {args.b}")
    print(out, end="")

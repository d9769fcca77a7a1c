"""DreamBench commands: `dreambench` (the data stage) and `evaluate` (the evaluation stage)."""

from __future__ import annotations

import argparse

from elite.config import load_params


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "dreambench",
        help="fetch (paper) or generate (smoke) DreamBench into dreambench.out",
        description="Get DreamBench (params dreambench.source: builtin | download | a local folder in the "
        "official layout), check it, and write it with subjects.json to dreambench.out.",
    )
    d.add_argument("--source", help="override params dreambench.source (builtin, download, or a folder)")
    d.add_argument("--out", help="output folder (default: params dreambench.out)")
    d.set_defaults(func=dreambench_cmd)

    e = sub.add_parser(
        "evaluate",
        help="DreamBench evaluation: CLIP-I, CLIP-T, DINO-I, lambda sweep, report",
        description="Generate the DreamBench images with ELITE (resumable), score them, and write "
        "metrics/dreambench.json, plots/lambda_sweep.csv, data/eval/ and a FiftyOne dataset.",
    )
    e.add_argument(
        "--shard",
        metavar="I/N",
        help="only generate the I-th of N shares of the images (0 <= I < N); "
        "a final run without --shard scores everything",
    )
    e.set_defaults(func=evaluate_cmd)

    c = sub.add_parser(
        "check-reference",
        help="does the workspace's evaluation match the committed reference within its spread?",
        description="Compare metrics/dreambench.json (evaluate.metrics) with the same file at a git revision: every "
        "row and metric the reference has a 95%% interval for. Exit 1 when one disagrees.",
    )
    c.add_argument("--rev", default="HEAD", help="git revision holding the reference (default HEAD)")
    c.set_defaults(func=check_reference_cmd)


def dreambench_cmd(args) -> None:
    from elite.evaluate.dreambench import build_dreambench

    params = load_params(args.params, args.profile)
    if args.source:
        params = _override(params, "dreambench", source=args.source)
    from elite.tracking import stage_run

    with stage_run(
        "dreambench",
        {"profile": params.profile, **{f"dreambench.{k}": v for k, v in params.dreambench.model_dump().items()}},
    ):
        import mlflow

        subjects = build_dreambench(params, args.out)
        live = sum(s.live for s in subjects)
        images = sum(len(s.images) for s in subjects)
        mlflow.log_metrics({"subjects": len(subjects), "live_subjects": live, "images": images})
    out = args.out or params.dreambench.out
    print(
        f"DreamBench: {len(subjects)} subjects ({len(subjects) - live} objects, {live} live), {images} images -> {out}"
    )


def evaluate_cmd(args) -> None:
    from elite.config.prepared import check_prepared

    params = load_params(args.params, args.profile)
    cfg = params.evaluate
    check_prepared(params, cfg.base, cfg.clip_model, cfg.dino_model, cfg.probes)
    from elite.evaluate.stage import run_evaluate

    run_evaluate(params, args.shard)


def _override(params, section: str, **values):
    from elite.config import Params

    sections = dict(params._sections)
    sections[section] = sections[section].model_copy(update=values)
    return Params(params.profile, sections, params.source)


def check_reference_cmd(args) -> int:
    from elite.evaluate.reference import check_reference

    params = load_params(args.params, args.profile)
    lines = check_reference(params.evaluate.metrics, args.rev)
    for r in lines:
        got = "-" if r["workspace"] is None else f"{r['workspace']:.3f}"
        lo, hi = r["interval"]
        mark = "ok " if r["agrees"] else "OFF"
        print(
            f"{mark} {r['row']:>10} {r['metric']:<14} workspace {got:>6}  reference {r['reference']:.3f} "
            f"[{lo:.3f}, {hi:.3f}]"
        )
    off = sum(not r["agrees"] for r in lines)
    print(f"{len(lines) - off} of {len(lines)} within the reference's spread")
    return 1 if off else 0

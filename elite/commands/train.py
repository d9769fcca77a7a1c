"""Training commands: train-global (stage 1) and train-local (stage 2).

One process: `elite train-global`. Several (GPUs, or gloo processes on a CPU machine):
`accelerate launch [--multi_gpu] --num_processes N -m elite.cli train-global`.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser(
        "train-global",
        help="stage 1: train the global mapper and global K/V (params: train_global)",
        description="Train M^g and the 16 global K/V pairs on train_global.manifest; resumes from the "
        "newest matching checkpoint in train_global.checkpoint_dir.",
    )
    g.set_defaults(func=lambda args: _run(args, "train_global"))
    loc = sub.add_parser(
        "train-local",
        help="stage 2: train the local mapper and local K/V (params: train_local)",
        description="Freeze the stage-1 weights (train_local.init) and train M^l and the 16 local K/V "
        "pairs on train_local.manifest; resumes like train-global.",
    )
    loc.set_defaults(func=lambda args: _run(args, "train_local"))


def _run(args, section: str) -> None:
    from elite.config import load_params
    from elite.config.prepared import check_prepared
    from elite.config.train import check_inputs

    params = load_params(args.params, args.profile)
    cfg = getattr(params, section)
    check_prepared(params, cfg.base, cfg.init)  # models prepared for another profile: one line, before any work
    check_inputs(cfg, section)
    from elite.tracking import check_tracking_server, tracking_uri

    check_tracking_server(tracking_uri())  # an unreachable MLflow server fails here, before models and data load
    from elite.train.loop import train
    from elite.train.stages import GlobalStage, LocalStage

    stage = GlobalStage(cfg) if section == "train_global" else LocalStage(cfg)
    train(stage, params.profile)

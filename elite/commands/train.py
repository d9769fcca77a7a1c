"""Training commands: train-global (stage 1) and train-local (stage 2).

params `launch.processes` 1: one process. More: the command starts itself again through
`accelerate launch --multi_gpu --num_processes N ... -m elite.cli train-global` (GPUs, or gloo processes on a
CPU machine) and waits for it, so the dvc.yaml stages and the Prefect flow run several processes unchanged.
Launched by hand (`accelerate launch ... -m elite.cli train-global`), it trains in the processes it was given.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

from elite.errors import EliteError


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
    if params.launch.processes > 1 and "WORLD_SIZE" not in os.environ:  # not yet inside accelerate's processes
        return _launch(args, params.launch, cfg.mixed_precision, section)
    from elite.tracking import check_tracking_server, tracking_uri

    check_tracking_server(tracking_uri())  # an unreachable MLflow server fails here, before models and data load
    from elite.train.loop import train
    from elite.train.stages import GlobalStage, LocalStage

    stage = GlobalStage(cfg) if section == "train_global" else LocalStage(cfg)
    train(stage, params.profile)


def launch_command(args, launch, mixed_precision: str, section: str) -> list[str]:
    """`accelerate launch` of this very command in `launch.processes` processes (params `launch`)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.is_file():
        raise EliteError("launch.processes > 1 needs `accelerate` in this environment; run `make setup`")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", str(launch.processes)]
    cmd += ["--num_machines", str(launch.machines), "--mixed_precision", mixed_precision, "--dynamo_backend", "no"]
    if launch.machines > 1:
        rank, ip = os.environ.get("ELITE_MACHINE_RANK"), os.environ.get("ELITE_MAIN_PROCESS_IP")
        if rank is None or ip is None or launch.main_process_port == 0:
            raise EliteError(
                f"launch.machines {launch.machines}: run the stage on every machine with ELITE_MACHINE_RANK "
                "(0 .. machines-1) and ELITE_MAIN_PROCESS_IP (machine 0's address) set, and a fixed "
                "launch.main_process_port in params.yaml"
            )
        cmd += ["--machine_rank", rank, "--main_process_ip", ip]
    cmd += ["--main_process_port", str(launch.main_process_port or _free_port())]
    profile = ["--profile", args.profile] if args.profile else []
    return cmd + ["-m", "elite.cli", "--params", args.params, *profile, section.replace("_", "-")]


def _launch(args, launch, mixed_precision: str, section: str) -> int:
    cmd = launch_command(args, launch, mixed_precision, section)
    print(f"{section}: {launch.processes} processes on {launch.machines} machine(s): {' '.join(cmd[1:])}", flush=True)
    return subprocess.run(cmd).returncode  # a failing process has printed its own one-line error


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

"""A Prefect worker for this checkout on a GPU node: `make worker POOL=gpu GPUS=0,1,2,3`.

    PREFECT_API_URL=http://prefect.team:4200/api python -m flows.worker --pool gpu --gpus 0,1,2,3

It creates the process work pool if the server has none of that name, then runs `prefect worker start`
with what prefect.yaml's deployments need on the node: ELITE_CHECKOUT (flow runs execute in this checkout),
this checkout's virtual environment first on PATH, and CUDA_VISIBLE_DEVICES (the GPUs this worker's flow
runs may use; a run can still override it with `--job-variable env='{"CUDA_VISIBLE_DEVICES": "2"}'`).

SIGTERM (systemd, Kubernetes, `kill`) stops the worker like Ctrl-C, with exit code 0. A plain
`prefect worker start &` from a script ignores SIGTERM: a background job inherits an ignored SIGINT, and
Prefect's SIGTERM handler stops the worker by sending it SIGINT. Here the worker starts with SIGINT at its
default, in a process group of its own, and SIGTERM or SIGINT to this wrapper is passed on once.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from elite.errors import EliteError, last_line

REPO = Path(__file__).resolve().parents[1]


def worker_env(gpus: str | None, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["ELITE_CHECKOUT"] = str(REPO)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if gpus is not None:
        if not all(part.strip().isdigit() for part in gpus.split(",")):
            raise EliteError(f"--gpus {gpus!r}: give device indices separated by commas, e.g. --gpus 0,1")
        env["CUDA_VISIBLE_DEVICES"] = gpus
    return env


def ensure_pool(prefect: str, pool: str, env: dict[str, str]) -> None:
    """The process work pool `pool` on the server, created when missing."""
    found = subprocess.run([prefect, "work-pool", "inspect", pool], env=env, capture_output=True, text=True)
    if found.returncode == 0:
        return
    made = subprocess.run(
        [prefect, "work-pool", "create", pool, "--type", "process"], env=env, capture_output=True, text=True
    )
    if made.returncode != 0:
        raise EliteError(f"prefect work-pool create {pool}: {last_line(made)}")


def _child_setup() -> None:
    """In the worker process before exec: SIGINT at its default, and a process group of its own, so that a
    signal to this wrapper's group (a terminal's Ctrl-C, `kill -- -PGID`) reaches it once, through `forward`."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.setpgrp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="gpu", help="process work pool (created if missing; default %(default)s)")
    parser.add_argument("--gpus", help="CUDA_VISIBLE_DEVICES for the flow runs, e.g. 0,1,2,3 (default: inherited)")
    parser.add_argument("--name", help="worker name (default: <host>-<pool>)")
    args = parser.parse_args(argv)
    try:
        if not os.environ.get("PREFECT_API_URL"):
            raise EliteError(
                "PREFECT_API_URL is not set: a worker takes runs from a server (e.g. http://host:4200/api)"
            )
        env = worker_env(args.gpus)
        prefect = str(Path(sys.executable).parent / "prefect")
        ensure_pool(prefect, args.pool, env)
    except EliteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = args.name or f"{socket.gethostname()}-{args.pool}"
    cmd = [prefect, "worker", "start", "--pool", args.pool, "--name", name]
    print(
        f"worker {name} on pool {args.pool}: checkout {REPO}, GPUs {env.get('CUDA_VISIBLE_DEVICES', 'all')}",
        flush=True,
    )
    worker = subprocess.Popen(cmd, cwd=REPO, env=env, preexec_fn=_child_setup)

    stopping = False

    def forward(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        if worker.poll() is None:
            worker.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = worker.wait()
    return 0 if stopping and code in (0, 130) else code  # 130: stopped by SIGINT, as asked


if __name__ == "__main__":
    sys.exit(main())

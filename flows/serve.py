"""Serve the deployments `elite/full` (paper profile) and `elite/smoke` (smoke profile).

    python -m flows.serve                 # local Prefect server (SQLite in PREFECT_HOME, 127.0.0.1:4200)
                                          # + both deployments
    python -m flows.serve --port 4300     # another port
    PREFECT_API_URL=https://prefect.team/api python -m flows.serve   # a team server: no local server is started

Then, from another shell: `PREFECT_API_URL=http://127.0.0.1:4200/api prefect deployment run elite/smoke --watch`.
Flow runs execute in this checkout, one at a time. Ctrl-C (or SIGTERM) stops serving and the local server.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from elite.errors import EliteError
from elite.ports import require_free_port

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENTS = {"full": "paper", "smoke": "smoke"}  # deployment name -> profile


def wait_healthy(api: str, server: subprocess.Popen | None, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise SystemExit(f"error: the Prefect server exited with code {server.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(
        f"error: no Prefect server answered {api}/health within {timeout:.0f} s" + (f"; see {log}" if log else "")
    )


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name
        return False


def ui_api_url(host: str, port: int) -> str:
    """The API address the server's UI gives browsers: this host and port (`prefect server start --port`
    alone leaves it at 4200). A wildcard (unspecified) host, IPv4 or IPv6, becomes this machine's name."""
    if not host or _unspecified(host):
        host = socket.gethostname()
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/api"


def start_server(host: str, port: int, home: Path) -> tuple[subprocess.Popen, Path]:
    """`prefect server start` on host:port with its SQLite database in `home`; output goes to home/server.log.
    Its UI talks to host:port, unless PREFECT_UI_API_URL / PREFECT_SERVER_UI_API_URL says otherwise (a proxy)."""
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    if not (env.get("PREFECT_SERVER_UI_API_URL") or env.get("PREFECT_UI_API_URL")):
        env["PREFECT_SERVER_UI_API_URL"] = ui_api_url(host, port)
    prefect = Path(sys.executable).parent / "prefect"
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [str(prefect), "server", "start", "--host", host, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return server, log


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM to the process group of `proc` (started with start_new_session), SIGKILL after `timeout` s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def deployments(shards: int):
    from flows.elite_flow import elite

    return [
        elite.to_deployment(
            name,
            parameters={"profile": profile, "shards": shards},
            tags=["elite", profile],
            description=f"The ELITE DVC pipeline on the {profile} profile",
        )
        for name, profile in DEPLOYMENTS.items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="local server address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=4200, help="local server port (default: %(default)s)")
    parser.add_argument(
        "--home",
        help="PREFECT_HOME for the local server and this process "
        "(default: $PREFECT_HOME, else .prefect/ in the repository)",
    )
    parser.add_argument("--local", action="store_true", help="start a local server even when PREFECT_API_URL is set")
    parser.add_argument("--shards", type=int, default=1, help="default shards of mask/evaluate for both deployments")
    args = parser.parse_args(argv)

    os.chdir(REPO)  # flow runs start here; the deployments' entrypoint is flows/elite_flow.py:elite
    home = Path(args.home or os.environ.get("PREFECT_HOME") or REPO / ".prefect").resolve()
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    server = None
    if os.environ.get("PREFECT_API_URL") and not args.local:
        api = os.environ["PREFECT_API_URL"].rstrip("/")
        wait_healthy(api, None, 30)
    else:
        try:  # a server already on this port (another checkout's) must not get this checkout's deployments
            require_free_port(args.host, args.port, "Prefect server", f"make serve PREFECT_PORT={args.port + 1}")
        except EliteError as exc:
            sys.exit(f"error: {exc}")
        server, log = start_server(args.host, args.port, home)
        api = f"http://{args.host}:{args.port}/api"
        print(f"Prefect server starting on {api} (PREFECT_HOME={home}, log {log})", flush=True)
        wait_healthy(api, server, 180, log)
    os.environ["PREFECT_API_URL"] = api
    # SIGTERM ends serving like Ctrl-C does, so the local server is stopped too
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        from prefect import serve  # imported after PREFECT_API_URL / PREFECT_HOME are set

        print(
            f"Serving elite/full and elite/smoke from {REPO}. Run one with:\n"
            f"  PREFECT_API_URL={api} prefect deployment run elite/smoke --watch",
            flush=True,
        )
        serve(*deployments(args.shards), limit=1)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            stop(server)


if __name__ == "__main__":
    main()

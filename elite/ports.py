"""Local servers of one checkout (Prefect server, MLflow UI) and the ports they listen on: a port another
checkout's server already holds is a one-line error naming the option that picks another, never a second
server that silently talks to the first."""

from __future__ import annotations

import socket

from elite.errors import EliteError


def require_free_port(host: str, port: int, what: str, option: str) -> None:
    """A one-line EliteError when something already listens on host:port (or the port cannot be bound)."""
    if not 0 < port < 65536:
        raise EliteError(f"{what}: port {port} is out of range; choose one between 1 and 65535 ({option})")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise EliteError(
                f"{what}: {host}:{port} is already in use ({exc.strerror}; another checkout's server?); pick "
                f"another port: {option}"
            ) from None

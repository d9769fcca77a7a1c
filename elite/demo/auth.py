"""Who may use the demo: login pairs for gradio's `launch(auth=...)`, and the rule that a page on a non-loopback
address needs them (unless the user says `--insecure`).

The pairs come from `--auth USER:PASSWORD` (repeatable; visible to other users of the machine in `ps`), the
environment variable ELITE_DEMO_AUTH (`USER:PASSWORD`, several separated by commas) or `--auth-file FILE`
(one `USER:PASSWORD` per line; blank lines and `#` comments are skipped).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from elite.errors import EliteError

AUTH_ENV = "ELITE_DEMO_AUTH"
LOOPBACK_NAMES = ("localhost",)


def parse_pair(text: str, source: str) -> tuple[str, str]:
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password:
        raise EliteError(f"{source}: expected USER:PASSWORD (both non-empty)")
    return user, password


def credentials(pairs: list[str] | None, file: str | Path | None, environ=os.environ) -> list[tuple[str, str]]:
    """Every login pair given: --auth values, then the --auth-file lines, then ELITE_DEMO_AUTH."""
    found = [parse_pair(p, "--auth") for p in pairs or []]
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise EliteError(f"{path}: auth file not found (--auth-file); one USER:PASSWORD per line")
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                found.append(parse_pair(line, f"{path}, line {number}"))
    if environ.get(AUTH_ENV):
        found += [parse_pair(p, AUTH_ENV) for p in environ[AUTH_ENV].split(",") if p.strip()]
    return found


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_exposure(host: str, logins: list, insecure: bool) -> None:
    """A page reachable from the network must ask for a login, unless the user means it (--insecure)."""
    if not logins and not insecure and not is_loopback(host):
        raise EliteError(
            f"--host {host} opens the demo to the network: give logins with --auth USER:PASSWORD, "
            f"--auth-file FILE or {AUTH_ENV}, or add --insecure to serve it without a login"
        )

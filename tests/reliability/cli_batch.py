"""Run many `elite` command lines in one interpreter, as the reliability catalogue needs (imports once).

stdin: a JSON list of {"id", "argv", "cwd"}. Each case runs `elite.cli.main(argv)` in `cwd` with its own
stdout/stderr; argparse's exit is its exit code, and an exception escaping `main` (a traceback in a real
run) is reported as such. stdout: one JSON line, id -> {"rc", "stdout", "stderr", "exception"}.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
import warnings


def run_case(argv: list[str]) -> dict:
    from elite.cli import main

    out, err = io.StringIO(), io.StringIO()
    rc, exception = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - what a real run would print as a traceback
            exception = traceback.format_exc()
            rc = 1
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "exception": exception}


def main() -> None:
    cases = json.loads(sys.stdin.read())
    home = os.getcwd()
    results = {}
    for case in cases:
        os.chdir(case.get("cwd") or home)
        try:
            results[case["id"]] = run_case(case["argv"])
        finally:
            os.chdir(home)
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()

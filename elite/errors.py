"""User-facing errors: one line that names the file or field and says what to do."""


class EliteError(ValueError):
    """An error caused by the user's input or setup; the CLI prints it as one line and exits 2."""


def last_line(proc) -> str:
    """What a failed command (a `subprocess.CompletedProcess` with captured text) said last: its last non-empty
    line of stderr, else of stdout, else its exit code: the part an EliteError quotes."""
    for stream in (proc.stderr, proc.stdout):
        lines = [line.strip() for line in (stream or "").splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    return f"exit code {proc.returncode}"

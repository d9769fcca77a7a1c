"""User-facing errors: one line that names the file or field and says what to do."""


class EliteError(ValueError):
    """An error caused by the user's input or setup; the CLI prints it as one line and exits 2."""

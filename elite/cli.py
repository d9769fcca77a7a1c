"""`elite` command line. Each module in elite.commands adds its subcommands through `register`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from elite.errors import EliteError

# modules under elite.commands, each with register(subparsers) adding parsers whose `func` runs them
COMMAND_MODULES = [
    "core", "concept", "register", "evaluate", "baselines", "train", "data", "demo", "experiments", "seeds",
    "plugins",
]  # fmt: skip


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (`error: elite generate: ...`), like every other error."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="elite", description="ELITE: one image -> a pseudo-word S* for Stable Diffusion")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--profile", choices=["smoke", "toy", "paper"], help="override params.yaml's profile")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"elite.commands.{name}").register(sub)
    return parser


def quiet_libraries() -> None:
    """Library chatter off, through their environment switches (importing them here would cost every
    command seconds)."""
    for key, value in {
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
        "DIFFUSERS_VERBOSITY": "error",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }.items():
        os.environ.setdefault(key, value)
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def end_progress_bars() -> None:
    """Close the progress bars an error interrupted, so that the error starts a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return int(args.func(args) or 0)
    except EliteError as exc:
        end_progress_bars()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

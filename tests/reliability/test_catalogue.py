"""The issue-9 catalogue (rel_catalogue.CATALOGUE), every case through the Python API and, where it has
one, through the command line: bad input is one `error:` line (exit 2, no traceback, nothing written);
unusual but valid input works with a sensible result."""

from __future__ import annotations

import re

import pytest
from PIL import Image
from rel_catalogue import CATALOGUE, Case
from rel_helpers import REPO, assert_one_line, run_cli_batch, run_elite

from elite.errors import EliteError

CLI_CASES = [c for c in CATALOGUE if c.cli is not None]


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_python_api(case: Case, ctx):
    if case.expect is None:
        case.api(ctx)
        return
    with pytest.raises(EliteError) as err:
        case.api(ctx)
    message = str(err.value)
    assert "\n" not in message and re.search(case.expect, message), message
    for path in case.writes(ctx):
        assert not path.exists(), f"{path} written by a failed call"


@pytest.fixture(scope="module")
def cli_results(ctx):
    """All command-line cases, run in one fresh interpreter (elite.cli.main per case, its own stdout/stderr)."""
    batch = []
    for case in CLI_CASES:
        argv, cwd = case.cli(ctx)
        batch.append({"id": case.id, "argv": argv, "cwd": str(cwd) if cwd else None})
    return run_cli_batch(batch)


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_command_line(case: Case, ctx, cli_results):
    result = cli_results[case.id]
    assert result["exception"] is None, result["exception"]
    if case.expect is None:
        assert result["rc"] == 0, result["stderr"][-2000:]
        out = [a for a in case.cli(ctx)[0] if a.endswith("out.png")][0]
        with Image.open(out) as img:
            assert img.format == "PNG" and img.size == (64, 64)
        if case.cli_warning:
            assert "warning: " in result["stderr"] and case.cli_warning in result["stderr"], result["stderr"]
        return
    assert result["rc"] == 2, (result["rc"], result["stderr"][-2000:])
    assert_one_line(result["stderr"], case.expect)
    for path in case.writes(ctx):
        assert not path.exists(), f"{path} written by a failed command"


@pytest.mark.parametrize("case_id", ["image-pil-bomb", "steps-not-a-number"])
def test_real_exit_code_and_stderr(case_id, ctx):
    """A few cases as real processes: the exit status and the whole stderr of `python -m elite.cli`."""
    case = next(c for c in CATALOGUE if c.id == case_id)
    argv, cwd = case.cli(ctx)
    run = run_elite(argv, cwd or REPO)
    assert run.returncode == 2, run.stderr
    assert_one_line(run.stderr, case.expect)
    assert run.stdout == ""


def test_catalogue_covers_the_issue():
    """Every item the issue lists has at least one case (guards against the table shrinking)."""
    ids = {c.id for c in CATALOGUE}
    required = [
        "image-missing",
        "image-empty",
        "jpeg-truncated",
        "png-truncated",
        "jpeg-corrupt",
        "png-corrupt",
        "image-cmyk-jpeg",
        "image-16bit-png",
        "image-rgba",
        "image-palette",
        "image-grayscale",
        "image-1x1",
        "image-20000x20",
        "image-12000x12000",
        "image-exif-rotated",
        "mask-wrong-size",
        "mask-all-black",
        "mask-all-white",
        "mask-non-binary-gray",
        "mask-rgb-vs-l",
        "prompt-no-placeholder",
        "prompt-two-placeholders",
        "prompt-over-77-tokens",
        "prompt-empty",
        "lambda-negative",
        "lambda-nan",
        "steps-zero",
        "scheduler-unknown",
        "params-typo-key",
        "params-wrong-type",
        "weights-folder-missing",
        "data-manifest-parent-path",
        "csv-missing-bbox-column",
        "dreambench-zip-dotdot",
    ]
    assert not [r for r in required if r not in ids]
    assert {c.area for c in CLI_CASES} == {"images", "masks", "prompts", "numbers", "config", "data"}

"""Helpers of the reliability tests: generated bad inputs, params files, the CLI batch runner, checks."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
H, W = 64, 48  # the source image: 48 wide, 64 high


def source_rgb() -> np.ndarray:
    """The concept image of the catalogue: a green block on red, with a blue corner (every channel varies)."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[...] = (200, 30, 40)
    rgb[16:48, 12:36] = (30, 190, 60)
    rgb[:8, :8] = (20, 40, 220)
    return rgb


def source_mask() -> np.ndarray:
    """Object = the green block (bool, H x W); its edges are even so a half-size copy upscales back exactly."""
    m = np.zeros((H, W), bool)
    m[16:48, 12:36] = True
    return m


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but holds almost no data: what a decompression bomb
    looks like to a loader before it decodes (a real 144-MP file is not needed to test the refusal)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def make_inputs(d: Path) -> Path:
    """Every image and mask file of the catalogue, generated (never read from elsewhere)."""
    d.mkdir(parents=True, exist_ok=True)
    rgb, mask = source_rgb(), source_mask()
    img = Image.fromarray(rgb)
    img.save(d / "ok.png")
    img.save(d / "ok.jpg", quality=95)
    img.convert("CMYK").save(d / "cmyk.jpg", quality=100)
    gray16 = (np.linspace(0, 65535, H * W).reshape(H, W)).astype(np.uint16)
    Image.fromarray(gray16).save(d / "gray16.png")
    img.quantize(8).save(d / "palette.png")
    pal = img.quantize(8)
    pal.info["transparency"] = int(np.asarray(pal)[0, 0])  # the palette entry of the blue corner is transparent
    pal.save(d / "palette_transparent.png", transparency=pal.info["transparency"])
    alpha = np.full((H, W), 255, np.uint8)
    alpha[:, : W // 2] = 0
    Image.fromarray(np.dstack([rgb, alpha])).save(d / "rgba.png")
    img.convert("L").save(d / "gray.png")
    Image.new("RGB", (1, 1), (90, 160, 30)).save(d / "one.png")
    Image.new("RGB", (16, 16), (90, 160, 30)).save(d / "uniform16.png")
    wide = np.zeros((20, 20000, 3), np.uint8)
    wide[..., 0] = np.linspace(0, 255, 20000).astype(np.uint8)
    Image.fromarray(wide).save(d / "wide.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: "rotate 90 clockwise to display"
    Image.fromarray(np.rot90(rgb, 1).copy()).save(d / "exif_rotated.png", exif=exif)
    (d / "empty.jpg").write_bytes(b"")
    (d / "a_folder.png").mkdir(exist_ok=True)
    jpeg, png = (d / "ok.jpg").read_bytes(), (d / "ok.png").read_bytes()
    (d / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (d / "truncated.png").write_bytes(png[: len(png) // 2])
    (d / "corrupt.jpg").write_bytes(jpeg[:20] + bytes(range(256)) * 8)
    (d / "corrupt.png").write_bytes(png[:33] + b"\x00" * 16 + png[49:])  # damaged chunk data after the header
    (d / "text.jpg").write_text("this is not an image\n")
    (d / "big_12000.png").write_bytes(png_header_only(12000, 12000))  # 144 MP: over our 100-MP limit
    (d / "bomb_20000.png").write_bytes(png_header_only(20000, 20000))  # 400 MP: PIL's own bomb error

    white = (mask * 255).astype(np.uint8)
    Image.fromarray(white).save(d / "mask.png")
    Image.fromarray(np.dstack([white] * 3)).save(d / "mask_rgb.png")
    Image.fromarray(white[::2, ::2]).save(d / "mask_half.png")
    Image.new("L", (W, H), 0).save(d / "mask_black.png")
    Image.new("L", (W, H), 255).save(d / "mask_white.png")
    Image.fromarray(np.where(mask, 128, 127).astype(np.uint8)).save(d / "mask_gray.png")
    channel_mean = np.where(mask[..., None], [[[255, 129, 0]]], [[[255, 128, 0]]]).astype(
        np.uint8
    )  # means 128 / 127.7
    Image.fromarray(channel_mean).save(d / "mask_color.png")
    Image.fromarray((mask * 65535).astype(np.uint16)).save(d / "mask16.png")
    Image.fromarray(np.dstack([np.full((H, W, 3), 255, np.uint8), white])).save(d / "mask_alpha.png")
    (d / "mask_corrupt.png").write_bytes(png[:33] + b"\x00" * 16 + png[49:])
    (d / "mask_empty.png").write_bytes(b"")
    (d / "mask_big.png").write_bytes(png_header_only(12000, 12000))
    return d


def write_params(target: Path, profile: str = "smoke", **sections) -> Path:
    """The repository's params.yaml with `section={key: value}` set in the profile's override map."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = profile
    for section, values in sections.items():
        raw[section].setdefault(profile, {}).update(values)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(raw, sort_keys=False))
    return target


def archive(kind: str, members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A zip or tar with exactly these member names (e.g. '../x'), plus tar symlinks name -> target."""
    buf = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            for name, target in (links or {}).items():
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, target
                tf.addfile(info)
    return buf.getvalue()


LOG_LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO ")  # MLflow's logger (e.g. when it creates a store)
PROGRESS = re.compile(r"\[\d\d:\d\d[^\]]*\]$")  # tqdm: "... 1/3 [00:01<00:02,  1.2it/s]"


def error_lines(stderr: str) -> list[str]:
    """The non-empty stderr lines that are not progress bars, warnings or MLflow's INFO log lines."""
    lines = [line.rsplit("\r", 1)[-1].strip() for line in stderr.split("\n")]  # what a terminal shows
    return [
        line
        for line in lines
        if line and not line.startswith("warning:") and not LOG_LINE.match(line) and not PROGRESS.search(line)
    ]


def assert_one_line(stderr: str, pattern: str) -> str:
    """stderr holds exactly one error line, `error: ...` matching `pattern`, and no traceback."""
    assert "Traceback" not in stderr, stderr[-2000:]
    lines = error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    return lines[0]


def run_cli_batch(cases: list[dict], timeout: float = 900) -> dict[str, dict]:
    """Run many `elite` command lines in ONE fresh interpreter (imports paid once): each case is
    {"id", "argv", "cwd"}; returns id -> {"rc", "stdout", "stderr", "exception"}."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("cli_batch.py"))],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def run_elite(args: list[str], cwd: Path, env: dict | None = None, background: bool = False, timeout: float = 600):
    """`python -m elite.cli ARGS` in a fresh interpreter (a real exit code and stderr)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "elite.cli", *map(str, args)]
    if background:
        return subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


SAFE_SUFFIXES = {".safetensors", ".json", ".jsonl", ".png", ".jpg", ".csv", ".txt", ".md"}


def assert_safe_formats(root: Path, allow_sam_pth: bool = False) -> None:
    """Every file under `root` is safetensors, JSON, an image, CSV or text (SAM's own .pth format where allowed)."""
    files = [p for p in Path(root).rglob("*") if p.is_file()]
    assert files
    for path in files:
        sam = allow_sam_pth and path.suffix == ".pth" and path.parent.name == "sam"
        assert path.suffix in SAFE_SUFFIXES or sam, f"{path}: written in a format that is not safetensors/JSON/PNG/CSV"

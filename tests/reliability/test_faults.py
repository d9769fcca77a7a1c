"""Faults (issue 9): SIGKILL during masking and evaluation then a rerun (resumes, same final result, no
corrupt file), downloads that fail (retries; a clear error and no dataset marked complete), an MLflow
server that does not answer (fails first, naming it), and two `dvc repro` at once (DVC's locks).

SIGKILL during training is covered by tests/train/test_train_processes.py
(test_sigkill_then_rerun_resumes_to_the_same_final_step); it is not repeated here.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from rel_helpers import REPO, assert_one_line, assert_safe_formats, run_elite, write_params

from elite.cli import main
from elite.errors import EliteError


def visible_files(root: Path) -> list[Path]:
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def all_paths(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL `proc` as soon as `ready()` is true; fail if it ended first (then nothing was interrupted)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (rc {proc.returncode}) before it could be interrupted:\n{err[-2000:]}")
        assert time.monotonic() < deadline, "the run never reached the point to interrupt"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def in_process(root: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(root), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["--params", "params.yaml", *argv])
    return rc, out.getvalue(), err.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- SIGKILL during masking ---------------------------------------------------------------------------------------
N_MASK_IMAGES = 160


def mask_project(root: Path, smoke_models: Path, images: int = N_MASK_IMAGES) -> Path:
    """A repository root for `elite mask`: the smoke SAM and a curated local.jsonl of `images` scenes x 2 boxes."""
    rng = np.random.default_rng(0)
    (root / "data/openimages/img").mkdir(parents=True)
    rows = []
    for i in range(images):
        image_id = f"{i:04x}{'ab' * 6}"
        rgb = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / f"data/openimages/img/{image_id}.jpg", quality=90)
        for box in ([10, 10, 60, 70], [50, 20, 120, 90]):
            rows.append(
                {
                    "image": f"data/openimages/img/{image_id}.jpg",
                    "box": box,
                    "label": "Dog",
                    "image_id": image_id,
                    "mask": None,
                }
            )
    (root / "data/curated").mkdir(parents=True)
    (root / "data/curated/local.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "models/pretrained").mkdir(parents=True)
    shutil.copytree(smoke_models / "sam", root / "models/pretrained/sam")
    write_params(root / "params.yaml")
    return root


def test_sigkill_during_masking_then_rerun_resumes_to_the_same_result(tmp_path, smoke_models):
    killed = mask_project(tmp_path / "killed", smoke_models)
    reference = tmp_path / "reference"
    shutil.copytree(killed, reference)
    sam_dir = killed / "data/masks/sam"

    proc = run_elite(["--params", "params.yaml", "mask"], killed, background=True)
    kill_when(proc, lambda: sam_dir.is_dir() and sum(1 for _ in sam_dir.rglob("[0-9a-f]*.png")) >= 20)

    done = [p for p in sam_dir.rglob("*.png") if not p.name.startswith(".")]
    assert 20 <= len(done) < 2 * N_MASK_IMAGES
    for path in done:  # every mask on disk is whole: written to a temporary sibling, then renamed
        with Image.open(path) as img:
            img.load()
            assert img.size == (128, 96) and img.mode == "L"
    assert not (killed / "data/masks/local.jsonl").exists() and not (killed / "metrics/mask.json").exists()

    rc, out, err = in_process(killed, "mask")
    assert rc == 0, err
    resumed = json.loads((killed / "metrics/mask.json").read_text())
    assert resumed["masks_made"] == 2 * N_MASK_IMAGES - len(done)  # only the missing masks were computed

    rc, out, err = in_process(reference, "mask")
    assert rc == 0, err
    assert json.loads((reference / "metrics/mask.json").read_text())["masks_made"] == 2 * N_MASK_IMAGES
    assert (killed / "data/masks/local.jsonl").read_text() == (reference / "data/masks/local.jsonl").read_text()
    files = visible_files(killed / "data/masks/sam")
    assert files == visible_files(reference / "data/masks/sam") and len(files) == 2 * N_MASK_IMAGES + 1  # + model.json
    for rel in files:
        assert (killed / "data/masks/sam" / rel).read_bytes() == (reference / "data/masks/sam" / rel).read_bytes(), rel
    assert_safe_formats(killed / "data/masks")


# --- SIGKILL during evaluation --------------------------------------------------------------------------------------
def eval_project(root: Path, smoke_models: Path) -> Path:
    """A repository root for `elite evaluate`: DreamBench's builtin set, concept masks, the smoke models."""
    write_params(
        root / "params.yaml",
        evaluate={
            "weights": str(smoke_models / "elite"),
            "base": str(smoke_models / "base"),
            "clip_model": str(smoke_models / "clip_eval"),
            "dino_model": str(smoke_models / "dino_eval"),
            "subjects": ["red_ball"],
            "max_prompts": 1,
            "extra_prompts": ["a photo of a {0} {1}"],
            "images_per_prompt": 4,
            "steps": 2,
            "baseline": False,
            "sweep_lams": [],
            "sweep_blocks": None,
            "multi_images": [],  # the concept image only (this test counts the images of one row)
            "cpu_threads": 1,
        },
        baselines={"subjects": []},
    )
    rc, _, err = in_process(root, "dreambench")
    assert rc == 0, err
    folder = root / "data/masks/dreambench"
    folder.mkdir(parents=True)
    for subject in json.loads((root / "data/dreambench/subjects.json").read_text()):
        with Image.open(root / subject["images"][0]) as img:
            mask = Image.new("L", img.size, 0)
        ImageDraw.Draw(mask).ellipse(
            [mask.width // 5, mask.height // 5, mask.width * 4 // 5, mask.height * 4 // 5], fill=255
        )
        mask.save(folder / f"{subject['subject']}.png")
    return root


def test_sigkill_during_evaluation_then_rerun_resumes_to_the_same_images(tmp_path, smoke_models):
    killed = eval_project(tmp_path / "killed", smoke_models)
    reference = tmp_path / "reference"
    shutil.copytree(killed, reference)
    out = killed / "data/eval"
    total = 2 * 4  # two prompts x four images

    proc = run_elite(["--params", "params.yaml", "evaluate", "--shard", "0/1"], killed, background=True)
    kill_when(proc, lambda: out.is_dir() and sum(1 for _ in out.rglob("[0-9]*.json")) >= 2)

    pngs = [p for p in out.rglob("*.png") if not p.name.startswith(".")]
    sidecars = [p for p in out.rglob("*.json") if p.stem.isdigit()]
    assert 2 <= len(sidecars) < total
    for path in pngs:
        with Image.open(path) as img:
            img.load()
            assert img.size == (64, 64)
    for path in sidecars:  # a sidecar is written after its image: it marks a finished image
        assert json.loads(path.read_text())["settings"] and path.with_suffix(".png").is_file()

    rc, stdout, err = in_process(killed, "evaluate", "--shard", "0/1")
    assert rc == 0, err
    assert f"generated {total - len(sidecars)} images, {len(sidecars)} already there" in stdout

    rc, stdout, err = in_process(reference, "evaluate", "--shard", "0/1")
    assert rc == 0, err
    assert f"generated {total} images, 0 already there" in stdout
    files = visible_files(out)
    assert files == visible_files(reference / "data/eval")
    assert sum(1 for f in files if f.suffix == ".png") == total
    for rel in files:
        if rel.suffix == ".png":
            a, b = (np.asarray(Image.open(root / rel)) for root in (out, reference / "data/eval"))
            assert np.array_equal(a, b), rel
        elif rel.stem.isdigit():
            a, b = (json.loads((root / rel).read_text()) for root in (out, reference / "data/eval"))
            assert (a["settings"], a["seed"]) == (b["settings"], b["seed"]), rel
    assert_safe_formats(out)


# --- downloads -------------------------------------------------------------------------------------------------------
class Flaky(BaseHTTPRequestHandler):
    """Serves `payload` at /main.zip; the first `failures` answers fail (a 503, then a body cut short)."""

    payload = b""
    failures = 0
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        self.requests.append(self.path)
        attempt = len(self.requests)
        if self.path != "/main.zip":
            self.send_error(404)
        elif attempt <= self.failures and attempt % 2 == 1:
            self.send_error(503, "try again later")
        elif attempt <= self.failures:  # promise the whole archive, send half, hang up
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.payload)))
            self.end_headers()
            self.wfile.write(self.payload[: len(self.payload) // 2])
            self.close_connection = True
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.payload)))
            self.end_headers()
            self.wfile.write(self.payload)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(payload: bytes, failures: int):
    handler = type("Handler", (Flaky,), {"payload": payload, "failures": failures, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def dreambench_zip(tmp_path_factory) -> bytes:
    from elite.evaluate.dreambench import write_builtin

    folder = write_builtin(tmp_path_factory.mktemp("dreambench-src") / "dataset", 0, 48)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.rglob("*")):
            zf.write(f, f"dreambooth-main/dataset/{f.relative_to(folder).as_posix()}")
    return buf.getvalue()


def dreambench_params(tmp_path: Path, url: str, sha256: str | None = None, retries: int = 3):
    from elite.config import load_params

    return load_params(
        write_params(
            tmp_path / "params.yaml",
            dreambench={"source": "download", "url": url, "sha256": sha256, "retries": retries, "retry_wait": 0.01},
        )
    )


def test_download_that_fails_twice_completes_through_retries(tmp_path, dreambench_zip):
    from elite.evaluate.dreambench import build_dreambench, read_subjects

    with serving(dreambench_zip, failures=2) as (url, requests):
        params = dreambench_params(tmp_path, f"{url}/main.zip", hashlib.sha256(dreambench_zip).hexdigest())
        subjects = build_dreambench(params, tmp_path / "dreambench")
    assert len(requests) == 3  # 503, cut-off body, whole archive
    assert [s.subject for s in subjects] == ["red_ball", "blue_box", "dog"]
    assert len(read_subjects(tmp_path / "dreambench" / "subjects.json")) == 3


def test_download_that_keeps_failing_is_one_clear_error_and_marks_nothing_complete(tmp_path, dreambench_zip):
    from elite.evaluate.dreambench import build_dreambench

    out = tmp_path / "data" / "dreambench"
    with serving(dreambench_zip, failures=100) as (url, requests):
        with pytest.raises(EliteError) as err:
            build_dreambench(dreambench_params(tmp_path, f"{url}/main.zip"), out)
        assert len(requests) == 3
        message = str(err.value)
        assert "\n" not in message and f"cannot download {url}/main.zip after 3 tries" in message
        assert "set dreambench.source to the unpacked dataset folder" in message
        assert not (tmp_path / "data").exists()  # no dataset, no half-written folder, no temporary file

        requests.clear()  # a permanent HTTP error is not retried
        with pytest.raises(EliteError, match=r"cannot download .*/nope\.zip \(HTTP 404\)"):
            build_dreambench(dreambench_params(tmp_path, f"{url}/nope.zip"), out)
        assert requests == ["/nope.zip"] and not (tmp_path / "data").exists()

    with serving(dreambench_zip, failures=0) as (url, _):
        build_dreambench(dreambench_params(tmp_path, f"{url}/main.zip"), out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with serving(dreambench_zip, failures=100) as (url, _), pytest.raises(EliteError, match="after 3 tries"):
        build_dreambench(dreambench_params(tmp_path, f"{url}/main.zip"), out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the complete copy is untouched
    assert os.listdir(out.parent) == ["dreambench"]


# --- MLflow server unreachable ---------------------------------------------------------------------------------------
def test_unreachable_mlflow_server_fails_first_naming_it(tmp_path, smoke_models, monkeypatch, capsys):
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://elite:s3cr3t-pw@127.0.0.1:{port}")
    expected = rf"MLflow tracking server http://\*\*\*@127\.0\.0\.1:{port} is unreachable"

    root = tmp_path / "project"
    manifest = root / "train.jsonl"
    mask_project(root, smoke_models, images=2)
    with contextlib.chdir(root):
        manifest.write_text(
            "".join(
                json.dumps({"image": r["image"], "box": r["box"]}) + "\n"
                for r in map(json.loads, (root / "data/curated/local.jsonl").read_text().splitlines())
            )
        )
        (root / "metrics").mkdir()
        (root / "metrics/dreambench.json").write_text(json.dumps({"overall": {"clip_t": 0.2, "dino_i": 0.3}}))
    write_params(
        root / "params.yaml",
        train_global={
            "base": str(smoke_models / "base"),
            "init": str(smoke_models / "elite"),
            "manifest": "train.jsonl",
            "out": "weights",
            "metrics": "train.json",
            "plot": "train.csv",
            "checkpoint_dir": "checkpoints",
            "cache_dir": "cache",
            "cache_latents": True,
            "crop_pad": [4, 4],
        },
        register={"weights": str(smoke_models / "elite"), "base": str(smoke_models / "base")},
    )
    before = all_paths(root)
    for argv in (["train-global"], ["mask"], ["dreambench"], ["download"], ["curate"], ["register"]):
        started = time.monotonic()
        rc, out, err = in_process(root, *argv)
        assert rc == 2, (argv, err)
        assert_one_line(err, expected)
        assert "s3cr3t-pw" not in out + err
        assert time.monotonic() - started < 60, argv
    assert all_paths(root) == before  # nothing computed or written: no masks, checkpoints, cache, data, metrics


# --- two `dvc repro` at once -----------------------------------------------------------------------------------------
def test_two_dvc_repro_at_once_the_second_refuses_clearly_and_outputs_stay_whole(tmp_path):
    """The real dvc.yaml (its dreambench stage, builtin set) in a scratch git + DVC repository."""
    from elite.evaluate.dreambench import read_subjects

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(REPO / "elite", repo / "elite", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", repo)
    shutil.copy(REPO / "pyproject.toml", repo)  # a dep of the plugins stage, which runs first
    write_params(repo / "params.yaml")
    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    }
    git = ["git", "-c", "user.name=rel", "-c", "user.email=rel@localhost"]
    for cmd in (
        ["git", "init", "-q"],
        [str(venv_bin / "dvc"), "init", "-q"],
        ["git", "add", "-A"],
        [*git, "commit", "-qm", "x"],
    ):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)

    dvc = [str(venv_bin / "dvc"), "repro", "dreambench"]
    first = subprocess.Popen(dvc, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rwlock = repo / ".dvc/tmp/rwlock"

    def writing() -> bool:  # the first run holds DVC's write lock on the stage's output while its command runs
        with contextlib.suppress(OSError, ValueError):
            return any(path.endswith("data/dreambench") for path in json.loads(rwlock.read_text()).get("write", {}))
        return False

    deadline = time.monotonic() + 300
    while not writing():
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second = subprocess.run(  # the same stage again (not its upstream `plugins`, which the first already ran)
        [*dvc, "--force", "--single-item"], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    overlapped = first.poll() is None
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    assert overlapped, "the first run ended before the second finished: nothing ran at the same time"
    assert second.returncode != 0, second.stderr
    assert "data/dreambench' is busy, it is being blocked by" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    status = subprocess.run([dvc[0], "status", "dreambench"], cwd=repo, env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout  # outputs match what the first run recorded in dvc.lock
    assert len(read_subjects(repo / "data/dreambench/subjects.json")) == 3

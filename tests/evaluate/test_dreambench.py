"""The DreamBench parser, the builtin set, the archive download and its safety, the `dreambench` stage."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
from eval_helpers import params_with, prompts_file, tar_of, zip_of
from PIL import Image

from elite.errors import EliteError
from elite.evaluate.dreambench import (
    PROMPTS_FILE,
    build_dreambench,
    extract_dataset,
    fill,
    load_dataset,
    parse_prompts_and_classes,
    read_subjects,
    write_builtin,
)


@pytest.fixture(scope="module")
def builtin_set(tmp_path_factory) -> Path:
    return write_builtin(tmp_path_factory.mktemp("dreambench") / "dataset", seed=0, size=48)


def _dataset(tmp_path: Path, classes, folders: dict[str, int], text: str | None = None) -> Path:
    root = tmp_path / "dataset"
    root.mkdir()
    (root / PROMPTS_FILE).write_text(text if text is not None else prompts_file(classes))
    for name, n in folders.items():
        (root / name).mkdir()
        for k in range(n):
            Image.new("RGB", (32, 32), (10 * k, 100, 200)).save(root / name / f"{k:02d}.jpg")
    return root


# --- parser ----------------------------------------------------------------------------------------------
def test_builtin_set_parses_in_the_published_format(builtin_set):
    text = (builtin_set / PROMPTS_FILE).read_text()
    assert "subject_name,class" in text and "'.format(unique_token, class_token)," in text
    subjects, warnings = load_dataset(builtin_set, ["cat", "dog"])
    assert warnings == []
    by_name = {s.subject: s for s in subjects}
    assert {n: (s.class_word, s.live, len(s.images)) for n, s in by_name.items()} == {
        "red_ball": ("ball", False, 3),
        "blue_box": ("box", False, 3),
        "dog": ("dog", True, 3),
    }
    spec = parse_prompts_and_classes(builtin_set / PROMPTS_FILE)
    assert by_name["dog"].prompts == spec.live_prompts and by_name["red_ball"].prompts == spec.object_prompts
    assert spec.object_prompts[0] == "a {0} {1} in the jungle"
    assert [p.name for p in by_name["dog"].images] == ["00.jpg", "01.jpg", "02.jpg"]


def test_parser_reads_the_lists_as_published(tmp_path):
    path = tmp_path / PROMPTS_FILE
    path.write_text(prompts_file([("backpack", "backpack"), ("bear_plushie", "stuffed animal"), ("dog6", "dog")]))
    spec = parse_prompts_and_classes(path)
    assert spec.classes == {"backpack": "backpack", "bear_plushie": "stuffed animal", "dog6": "dog"}
    assert spec.object_prompts[-1] == "a cube shaped {0} {1}"
    assert spec.live_prompts[1] == "a {0} {1} wearing a santa hat"
    assert fill(spec.live_prompts[1], "S*", "") == "a S* wearing a santa hat"
    assert fill(spec.live_prompts[1], "", "dog") == "a dog wearing a santa hat"
    assert fill(spec.live_prompts[1], "sks", "dog") == "a sks dog wearing a santa hat"


def test_subjects_listed_without_a_folder_are_skipped_with_a_warning(tmp_path):
    root = _dataset(tmp_path, [("cat", "cat"), ("teapot", "teapot"), ("can", "can")], {"cat": 2, "teapot": 1})
    subjects, warnings = load_dataset(tmp_path, ["cat", "dog"])  # the parent of dataset/ works too
    assert [s.subject for s in subjects] == ["cat", "teapot"]
    assert len(warnings) == 1 and "can" in warnings[0] and str(root / PROMPTS_FILE) in warnings[0]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.replace("subject_name,class", "name;class"), "no 'subject_name,class' header"),
        (lambda t: t.replace("teapot,teapot", "tea pot,teapot"), ":5: subject name 'tea pot'"),
        (lambda t: t.replace("teapot,teapot", "teapot,teapot\ncat,cat"), ":6: subject 'cat' is listed twice"),
        (lambda t: t.replace("Live Subject Prompts", "Living Prompts"), "no 'Live Subject Prompts' heading"),
        (
            lambda t: t.replace(
                "'a red {0} {1}'.format(unique_token, class_token)",
                "'a red {0} {1}'.format(class_token, unique_token)",
            ),
            ":14: prompt entry must be 'TEMPLATE'.format(unique_token, class_token)",
        ),
        (
            lambda t: t.replace(
                "'a red {0} {1}'.format(unique_token, class_token)", "'a red {1}'.format(unique_token, class_token)"
            ),
            "must contain {0} (unique token) once",
        ),
        (
            lambda t: t.replace(
                "'a red {0} {1}'.format(unique_token, class_token),", "'a red {0} {1}.format(unique_token,"
            ),
            "is not valid Python",
        ),
        (
            lambda t: t.replace(
                "'a red {0} {1}'.format(unique_token, class_token)", "__import__('os').system('true')"
            ),
            ":14: prompt entry must be",
        ),
        (lambda t: t.rsplit("]", 1)[0], "never closed"),
    ],
)
def test_malformed_prompts_file_is_a_one_line_error_naming_file_and_line(tmp_path, mutate, message):
    path = tmp_path / PROMPTS_FILE
    path.write_text(mutate(prompts_file([("cat", "cat"), ("teapot", "teapot")])))
    with pytest.raises(EliteError) as err:
        parse_prompts_and_classes(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "case, message",
    [
        ("stray_folder", "has no row in"),
        ("no_images", "no images"),
        ("corrupt", "not a readable image"),
        ("none_present", "none of the 2 subjects"),
        ("missing_file", "no prompts_and_classes.txt"),
    ],
)
def test_bad_folders_are_clear_errors(tmp_path, case, message):
    root = _dataset(tmp_path, [("cat", "cat"), ("teapot", "teapot")], {"cat": 1, "teapot": 1})
    if case == "stray_folder":
        (root / "robot").mkdir()
    elif case == "no_images":
        for f in (root / "cat").iterdir():
            f.unlink()
    elif case == "corrupt":
        (root / "cat" / "00.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    elif case == "none_present":
        shutil.rmtree(root / "cat")
        shutil.rmtree(root / "teapot")
    elif case == "missing_file":
        (root / PROMPTS_FILE).unlink()
    with pytest.raises(EliteError, match=message):
        load_dataset(root, ["cat"])


# --- archives ---------------------------------------------------------------------------------------------
def test_extract_takes_only_the_dataset_folder(tmp_path, builtin_set):
    archive = tmp_path / "repo.zip"
    archive.write_bytes(zip_of(builtin_set, "dreambooth-main/dataset", {"dreambooth-main/other/file.txt": b"x"}))
    out = extract_dataset(archive, "dataset", tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["blue_box", "dog", PROMPTS_FILE, "red_ball"]
    subjects, _ = load_dataset(out, ["dog"])
    assert len(subjects) == 3


@pytest.mark.parametrize(
    "name",
    [
        "dreambooth-main/dataset/../../evil.txt",
        "/etc/evil.txt",
        "dreambooth-main\\..\\evil.txt",
        "dreambooth-main/dataset/dog/../../../evil.txt",
    ],
)
def test_zip_with_path_traversal_is_refused_before_anything_is_written(tmp_path, builtin_set, name):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(zip_of(builtin_set, "dreambooth-main/dataset", {name: b"owned"}))
    with pytest.raises(EliteError, match="unsafe member path"):
        extract_dataset(archive, "dataset", tmp_path / "a" / "b" / "out")
    assert not (tmp_path / "a").exists()
    assert not list(tmp_path.rglob("evil.txt"))


def test_tar_with_a_symlink_is_refused(tmp_path, builtin_set):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(
        tar_of(builtin_set, "dreambooth-main/dataset", link=("dreambooth-main/dataset/dog/03.jpg", "/etc/passwd"))
    )
    with pytest.raises(EliteError, match="link or device"):
        extract_dataset(archive, "dataset", tmp_path / "out")
    good = tmp_path / "good.tar.gz"
    good.write_bytes(tar_of(builtin_set, "dreambooth-main/dataset"))
    assert (extract_dataset(good, "dataset", tmp_path / "ok") / PROMPTS_FILE).is_file()


def test_archive_without_the_dataset_folder_or_not_an_archive(tmp_path, builtin_set):
    archive = tmp_path / "repo.zip"
    archive.write_bytes(zip_of(builtin_set, "dreambooth-main/data"))
    with pytest.raises(EliteError, match="no dataset/prompts_and_classes.txt inside"):
        extract_dataset(archive, "dataset", tmp_path / "out")
    archive.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(EliteError, match="not a zip or tar archive"):
        extract_dataset(archive, "dataset", tmp_path / "out")


@contextmanager
def serve(folder: Path):
    """A static HTTP server on 127.0.0.1 (a free port) for `folder`, stopped on exit."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_download_stage_end_to_end_over_http(tmp_path, builtin_set, repo_root):
    site = tmp_path / "site"
    site.mkdir()
    data = zip_of(builtin_set, "dreambooth-main/dataset")
    (site / "main.zip").write_bytes(data)
    out = tmp_path / "data" / "dreambench"
    with serve(site) as url:
        params = params_with(
            repo_root,
            dreambench={"source": "download", "url": f"{url}/main.zip", "sha256": hashlib.sha256(data).hexdigest()},
        )
        subjects = build_dreambench(params, out)
        assert [s.subject for s in subjects] == ["red_ball", "blue_box", "dog"]
        rows = read_subjects(out / "subjects.json")
        assert rows[2] == {
            "subject": "dog",
            "class": "dog",
            "live": True,
            "images": [(out / "dog" / f"0{k}.jpg").as_posix() for k in range(3)],
            "prompts": parse_prompts_and_classes(builtin_set / PROMPTS_FILE).live_prompts,
        }
        assert all(Path(p).is_file() for r in rows for p in r["images"])
        assert (out / PROMPTS_FILE).read_text() == (builtin_set / PROMPTS_FILE).read_text()

        bad = params_with(repo_root, dreambench={"source": "download", "url": f"{url}/main.zip", "sha256": "0" * 64})
        with pytest.raises(EliteError, match="SHA-256 is"):
            build_dreambench(bad, tmp_path / "other")
        missing = params_with(repo_root, dreambench={"source": "download", "url": f"{url}/nope.zip"})
        with pytest.raises(EliteError, match="cannot download .*nope.zip"):
            build_dreambench(missing, tmp_path / "other")
    assert not (tmp_path / "other").exists()
    assert json.loads((out / "subjects.json").read_text()) == rows  # a failed run left the earlier output alone


def test_cli_dreambench_from_a_local_folder(tmp_path, builtin_set, repo_root, monkeypatch, capsys):
    from elite.cli import main

    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    shutil.copy(repo_root / "params.yaml", params)
    assert main(["--params", str(params), "dreambench", "--source", str(builtin_set.parent)]) == 0
    assert "3 subjects (2 objects, 1 live), 9 images" in capsys.readouterr().out
    rows = read_subjects(tmp_path / "data" / "dreambench" / "subjects.json")
    assert rows[0]["images"][0] == "data/dreambench/red_ball/00.jpg"  # relative to the repository root
    assert main(["--params", str(params), "dreambench", "--source", str(tmp_path / "nowhere")]) == 2
    assert "DreamBench folder not found" in capsys.readouterr().err

"""Helpers of the evaluate tests: params with overrides, prompts files, archives, mongod bookkeeping."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import psutil
import yaml

from elite.config import parse_params

REAL_STYLE_OBJECT = [
    "a {0} {1} in the jungle",
    "a {0} {1} on top of pink fabric",
    "a red {0} {1}",
    "a cube shaped {0} {1}",
]
REAL_STYLE_LIVE = [
    "a {0} {1} in the snow",
    "a {0} {1} wearing a santa hat",
    "a {0} {1} in a chef outfit",
    "a wet {0} {1}",
]


def params_with(repo_root: Path, profile: str = "smoke", **sections):
    """The repo's params.yaml with `section={key: value}` overrides applied for `profile`."""
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    for section, values in sections.items():
        raw[section].setdefault(profile, {}).update(values)
    return parse_params(raw, "params.yaml", profile)


def write_params(repo_root: Path, target: Path, profile: str = "smoke", **sections) -> Path:
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["profile"] = profile
    for section, values in sections.items():
        raw[section].setdefault(profile, {}).update(values)
    target.write_text(yaml.safe_dump(raw, sort_keys=False))
    return target


def prompts_file(
    classes: list[tuple[str, str]],
    object_prompts=REAL_STYLE_OBJECT,
    live_prompts=REAL_STYLE_LIVE,
    object_entries: list[str] | None = None,
) -> str:
    """prompts_and_classes.txt in the published format (object_entries: raw lines instead of templates)."""
    rows = "\n".join(f"{n},{c}" for n, c in classes)
    obj = object_entries or [f"'{p}'.format(unique_token, class_token)," for p in object_prompts]
    live = [f"'{p}'.format(unique_token, class_token)," for p in live_prompts]
    return (
        "Classes\n\nsubject_name,class\n"
        + rows
        + "\n\nPrompts\n\nObject Prompts\n\nprompt_list = [\n"
        + "\n".join(obj)
        + "\n]\n\nLive Subject Prompts\n\nprompt_list = [\n"
        + "\n".join(live)
        + "\n]\n"
    )


def zip_of(folder: Path, prefix: str, extra: dict[str, bytes] | None = None) -> bytes:
    """A zip like GitHub's archive: every file of `folder` under `prefix/`, plus raw `extra` members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(prefix.split("/")[0] + "/README.md", "repo readme\n")
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f"{prefix}/{f.relative_to(folder).as_posix()}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_of(folder: Path, prefix: str, link: tuple[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(folder, arcname=prefix)
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tf.addfile(info)
    return buf.getvalue()


def mongod_pids(dbpath: Path) -> set[int]:
    """Running mongod processes whose --dbpath is `dbpath`."""
    out = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if cmd and Path(cmd[0]).name == "mongod" and str(dbpath) in cmd:
                out.add(proc.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out

"""DreamBench (the `dataset/` folder of github.com/google/dreambooth): parse, fetch, build.

The published layout is `<subject>/NN.jpg` plus `prompts_and_classes.txt`, a text file with a
`subject_name,class` table and two prompt lists written as Python source:

    Object Prompts

    prompt_list = [
    'a {0} {1} in the jungle'.format(unique_token, class_token),
    ...
    ]

The lists are read with Python's parser (`ast`), never executed. `{0}` is the unique token (S*) and
`{1}` the class word. The file does not mark live subjects; `dreambench.live_classes` does (cats and
dogs). The `dreambench` stage writes the set to `dreambench.out` in the same layout, plus
`subjects.json`: `[{"subject", "class", "live", "images", "prompts"}]` with image paths as written
(relative to the repository root) and the prompts as the published templates.
"""

from __future__ import annotations

import ast
import logging
import re
import shutil
import string
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError
from tqdm import tqdm

from elite.errors import EliteError
from elite.io import atomic_dir, fetch_url, inside, write_json
from elite.plugins import DREAMBENCH, plugin

log = logging.getLogger(__name__)

PROMPTS_FILE = "prompts_and_classes.txt"
SUBJECTS_JSON = "subjects.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
EXTRA_FILES = (
    "references_and_licenses.txt",
    "LICENSE",
    "LICENSE.md",
    "LICENSE.txt",  # copied along when present
    "toy_concepts.json",
)  # the toy set's attributes per subject (elite/toy/dreambench.py)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
LISTS = {"object": "Object Prompts", "live": "Live Subject Prompts"}
FORMAT_ARGS = ("unique_token", "class_token")
MAX_ARCHIVE_BYTES = 8 << 30  # refuse archives that unpack to more (the real data set is ~150 MB)


@dataclass(frozen=True)
class PromptsAndClasses:
    classes: dict[str, str]  # subject -> class word, in file order
    object_prompts: list[str]  # templates: {0} = unique token, {1} = class word
    live_prompts: list[str]


@dataclass(frozen=True)
class Subject:
    subject: str
    class_word: str
    live: bool
    images: list[Path]
    prompts: list[str]

    def to_json(self) -> dict:
        return {
            "subject": self.subject,
            "class": self.class_word,
            "live": self.live,
            "images": [p.as_posix() for p in self.images],
            "prompts": list(self.prompts),
        }


# --- prompts_and_classes.txt ---------------------------------------------------------------------------
def parse_prompts_and_classes(path: str | Path) -> PromptsAndClasses:
    """Parse the published file; any deviation is a one-line EliteError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise EliteError(f"{path}: not found; a DreamBench folder has {PROMPTS_FILE} next to its subject folders")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise EliteError(f"{path}: not UTF-8 text") from None
    classes = _parse_classes(path, lines)
    lists = {kind: _parse_prompt_list(path, lines, heading) for kind, heading in LISTS.items()}
    return PromptsAndClasses(classes, lists["object"], lists["live"])


def _parse_classes(path: Path, lines: list[str]) -> dict[str, str]:
    header = next(
        (i for i, line in enumerate(lines) if line.strip().replace(" ", "").lower() == "subject_name,class"), None
    )
    if header is None:
        raise EliteError(f"{path}: no 'subject_name,class' header line; is this DreamBench's {PROMPTS_FILE}?")
    classes: dict[str, str] = {}
    for i in range(header + 1, len(lines)):
        line = lines[i].strip()
        if not line:
            if classes:
                break
            continue
        if "," not in line:
            break  # the next heading ("Prompts")
        name, cls = (part.strip() for part in line.split(",", 1))
        if not NAME.match(name):
            raise EliteError(f"{path}:{i + 1}: subject name {name!r} is not a folder name (letters, digits, _ . -)")
        if not cls or "," in cls:
            raise EliteError(f"{path}:{i + 1}: expected 'subject_name,class', got {line!r}")
        if name in classes:
            raise EliteError(f"{path}:{i + 1}: subject {name!r} is listed twice")
        classes[name] = cls
    if not classes:
        raise EliteError(f"{path}:{header + 1}: the classes table under 'subject_name,class' is empty")
    return classes


def _parse_prompt_list(path: Path, lines: list[str], heading: str) -> list[str]:
    start = next((i for i, line in enumerate(lines) if line.strip().lower() == heading.lower()), None)
    if start is None:
        raise EliteError(f"{path}: no '{heading}' heading; the file must hold the object and the live prompt lists")
    first = next((i for i in range(start + 1, len(lines)) if lines[i].strip()), None)
    if first is None or not lines[first].lstrip().startswith("prompt_list"):
        raise EliteError(f"{path}:{(first or start) + 1}: expected 'prompt_list = [' after '{heading}'")
    last = next(
        (i for i in range(first, len(lines)) if lines[i].strip().startswith("]") or lines[i].rstrip().endswith("]")),
        None,
    )
    if last is None:
        raise EliteError(f"{path}:{first + 1}: the '{heading}' prompt_list is never closed with ']'")
    source = "\n".join(lines[first : last + 1])
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise EliteError(
            f"{path}:{first + (exc.lineno or 1)}: the '{heading}' prompt_list is not valid Python ({exc.msg})"
        ) from None
    body = tree.body
    if (
        len(body) != 1
        or not isinstance(body[0], ast.Assign)
        or not isinstance(body[0].value, ast.List)
        or [getattr(t, "id", None) for t in body[0].targets] != ["prompt_list"]
    ):
        raise EliteError(f"{path}:{first + 1}: expected 'prompt_list = [...]' under '{heading}'")
    prompts = [_template(path, first + node.lineno, node) for node in body[0].value.elts]
    if not prompts:
        raise EliteError(f"{path}:{first + 1}: the '{heading}' prompt_list is empty")
    return prompts


def _template(path: Path, lineno: int, node: ast.expr) -> str:
    """'TEMPLATE'.format(unique_token, class_token) -> TEMPLATE (a bare 'TEMPLATE' string is accepted too)."""
    expected = f"'TEMPLATE'.format({', '.join(FORMAT_ARGS)})"
    if isinstance(node, ast.Call):
        func = node.func
        if (
            not isinstance(func, ast.Attribute)
            or func.attr != "format"
            or not isinstance(func.value, ast.Constant)
            or not isinstance(func.value.value, str)
            or node.keywords
            or [getattr(a, "id", None) for a in node.args] != list(FORMAT_ARGS)
        ):
            raise EliteError(f"{path}:{lineno}: prompt entry must be {expected}, got {ast.unparse(node)!r}")
        text = func.value.value
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    else:
        raise EliteError(f"{path}:{lineno}: prompt entry must be {expected}, got {ast.unparse(node)!r}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise EliteError(f"{path}:{lineno}: prompt {text!r} is not a valid format string ({exc})") from None
    if any(f not in ("0", "1") for f in fields) or fields.count("0") != 1 or fields.count("1") > 1:
        raise EliteError(
            f"{path}:{lineno}: prompt {text!r} must contain {{0}} (unique token) once and at most one "
            f"{{1}} (class word)"
        )
    return text


def fill(template: str, unique: str, class_word: str) -> str:
    """A template with its fields filled, whitespace collapsed ("a {0} {1} x" with "" -> "a x")."""
    return " ".join(template.format(unique, class_word).split())


# --- the folder -------------------------------------------------------------------------------------------
def locate(root: str | Path) -> Path:
    """The data set folder: `root` itself or `root/dataset` (a checkout of the repository)."""
    root = Path(root)
    for candidate in (root, root / "dataset"):
        if (candidate / PROMPTS_FILE).is_file():
            return candidate
    if not root.is_dir():
        raise EliteError(
            f"{root}: DreamBench folder not found (dreambench.source: builtin, download, or a local folder)"
        )
    raise EliteError(
        f"{root}: no {PROMPTS_FILE} here or in {root / 'dataset'}; point dreambench.source at "
        "DreamBench's dataset/ folder"
    )


def load_dataset(root: str | Path, live_classes: list[str]) -> tuple[list[Subject], list[str]]:
    """Subjects of a folder in the official layout, and warnings (subjects listed without a folder)."""
    root = locate(root)
    spec = parse_prompts_and_classes(root / PROMPTS_FILE)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        if folder.name not in spec.classes:
            raise EliteError(
                f"{folder}: subject folder has no row in {root / PROMPTS_FILE}'s classes table; "
                f"add '{folder.name},<class>' or remove the folder"
            )
    present = {p.name for p in folders}
    subjects = []
    for name, cls in spec.classes.items():
        if name not in present:
            continue
        images = sorted(p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise EliteError(
                f"{root / name}: no images ({', '.join(IMAGE_SUFFIXES)}); each subject needs 00.jpg, 01.jpg, ..."
            )
        for image in images:
            _check_image(image)
        live = cls in live_classes
        subjects.append(Subject(name, cls, live, images, spec.live_prompts if live else spec.object_prompts))
    missing = [n for n in spec.classes if n not in present]
    warnings = (
        [
            f"{root / PROMPTS_FILE}: {len(missing)} listed subject(s) have no folder and are skipped: "
            f"{', '.join(missing)}"
        ]
        if missing
        else []
    )
    if not subjects:
        raise EliteError(f"{root}: none of the {len(spec.classes)} subjects in {PROMPTS_FILE} has a folder")
    return subjects, warnings


def _check_image(path: Path) -> None:
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise EliteError(f"{path}: not a readable image ({type(exc).__name__}); replace or remove it") from None


def read_subjects(path: str | Path) -> list[dict]:
    """subjects.json as written by the dreambench stage, checked."""
    import json

    path = Path(path)
    if not path.is_file():
        raise EliteError(f"{path}: not found; run `elite dreambench` first")
    try:
        rows = json.loads(path.read_text())
    except ValueError as exc:
        raise EliteError(f"{path}: not valid JSON ({exc}); run `elite dreambench` again") from None
    keys = {"subject", "class", "live", "images", "prompts"}
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and keys <= set(r) for r in rows):
        raise EliteError(
            f"{path}: expected a non-empty list of {{{', '.join(sorted(keys))}}}; run `elite dreambench` again"
        )
    for i, row in enumerate(rows):  # names become folder names; images stay in the repository or beside the file
        name, images = row["subject"], row["images"]
        if not isinstance(name, str) or not NAME.match(name):
            raise EliteError(f"{path}: entry {i}: subject {name!r} must be a plain name (letters, digits, _ . -)")
        if not isinstance(images, list) or not images:
            raise EliteError(
                f"{path}: subject {name}: 'images' must be a non-empty list; run `elite dreambench` again"
            )
        for image in images:
            if not isinstance(image, str) or not inside(image, ".", path.parent):
                raise EliteError(
                    f"{path}: subject {name}: image {image!r} is outside the repository and {path.parent}; "
                    f"run `elite dreambench` again"
                )
    return rows


# --- fetching ----------------------------------------------------------------------------------------------
def download(url: str, dest: Path, sha256: str | None, retries: int, retry_wait: float) -> Path:
    """Fetch `url` to `dest` with retries (elite.io.fetch_url); check its SHA-256 when given."""
    digest = fetch_url(
        url,
        dest,
        retries,
        retry_wait,
        "without internet, fetch it elsewhere and set dreambench.source to the unpacked dataset folder",
    )
    if sha256 and digest != sha256.lower():
        raise EliteError(
            f"{url}: SHA-256 is {digest}, params dreambench.sha256 says {sha256}; "
            f"the archive changed: check it and update the pin"
        )
    return dest


def _members(archive: Path):
    """(posix name, kind 'file'|'dir'|'other', size, opener) of every member of a zip or tar archive."""
    if zipfile.is_zipfile(archive):
        zf = zipfile.ZipFile(archive)
        out = []
        for info in zf.infolist():
            mode = (info.external_attr >> 16) & 0o170000
            kind = "dir" if info.is_dir() else ("other" if mode and mode != 0o100000 else "file")
            out.append((info.filename, kind, info.file_size, lambda i=info: zf.open(i)))
        return out, zf
    if tarfile.is_tarfile(archive):
        tf = tarfile.open(archive)  # noqa: SIM115 (returned open: the caller reads members, then closes it)
        out = []
        for info in tf.getmembers():
            kind = "dir" if info.isdir() else ("file" if info.isfile() else "other")
            out.append((info.name, kind, info.size, lambda i=info: tf.extractfile(i)))
        return out, tf
    raise EliteError(f"{archive}: not a zip or tar archive; check dreambench.url")


def _safe_parts(name: str, archive: Path) -> tuple[str, ...]:
    if "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise EliteError(f"{archive}: unsafe member path {name!r} (absolute or with backslashes); refusing to unpack")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if ".." in parts:
        raise EliteError(f"{archive}: unsafe member path {name!r} (leaves the target folder); refusing to unpack")
    return parts


def extract_dataset(archive: Path, archive_dir: str, dest: Path) -> Path:
    """Unpack the `archive_dir` folder (the one holding prompts_and_classes.txt) of `archive` into `dest`.

    Every member is checked first: absolute paths, '..', links and devices refuse the whole archive.
    """
    members, handle = _members(archive)
    with handle:
        checked = [(_safe_parts(name, archive), kind, size, opener) for name, kind, size, opener in members]
        for parts, kind, _, _ in checked:
            if kind == "other":
                raise EliteError(f"{archive}: member {'/'.join(parts)!r} is a link or device; refusing to unpack")
        roots = sorted(
            (
                parts[:-1]
                for parts, kind, _, _ in checked
                if kind == "file" and parts[-1] == PROMPTS_FILE and len(parts) >= 2 and parts[-2] == archive_dir
            ),
            key=len,
        )
        if not roots:
            raise EliteError(
                f"{archive}: no {archive_dir}/{PROMPTS_FILE} inside; check dreambench.url and dreambench.archive_dir"
            )
        root = roots[0]
        chosen = [
            (parts[len(root) :], kind, size, opener)
            for parts, kind, size, opener in checked
            if parts[: len(root)] == root and len(parts) > len(root)
        ]
        if sum(size for _, _, size, _ in chosen) > MAX_ARCHIVE_BYTES:
            raise EliteError(f"{archive}: {archive_dir}/ unpacks to more than {MAX_ARCHIVE_BYTES >> 30} GiB; refusing")
        dest.mkdir(parents=True, exist_ok=True)
        base = dest.resolve()
        for parts, kind, _, opener in tqdm(chosen, desc="unpack DreamBench", unit="file"):
            target = (base / Path(*parts)).resolve()
            if base not in target.parents:
                raise EliteError(f"{archive}: member {'/'.join(parts)!r} resolves outside the target folder; refusing")
            if kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with opener() as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    return dest


# --- the builtin (smoke) set --------------------------------------------------------------------------------
BUILTIN_SUBJECTS = [
    ("red_ball", "ball", "disc", (210, 40, 40)),
    ("blue_box", "box", "square", (40, 70, 200)),
    ("dog", "dog", "dog", (150, 100, 60)),
]
BUILTIN_PROMPTS = {
    "Object Prompts": ["a {0} {1} in the jungle", "a {0} {1} on top of pink fabric", "a red {0} {1}"],
    "Live Subject Prompts": ["a {0} {1} in the snow", "a {0} {1} wearing a red hat", "a shiny {0} {1}"],
}


def write_builtin(out: Path, seed: int, size: int, images_per_subject: int = 3) -> Path:
    """A tiny generated set in the official layout: two objects and one live subject (a 'dog')."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, _, shape, color in BUILTIN_SUBJECTS:
        (out / name).mkdir(exist_ok=True)
        for k in range(images_per_subject):
            background = tuple(int(v) for v in rng.integers(150, 250, 3))
            img = Image.new("RGB", (size, size), background)
            draw = ImageDraw.Draw(img)
            cx, cy = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
            r = size * rng.uniform(0.22, 0.3)
            box = [cx - r, cy - r, cx + r, cy + r]
            if shape == "square":
                draw.rectangle(box, fill=color)
            elif shape == "disc":
                draw.ellipse(box, fill=color)
            else:  # a body with two ears
                draw.ellipse([cx - r, cy - 0.7 * r, cx + r, cy + r], fill=color)
                for side in (-1, 1):
                    ex = cx + side * 0.6 * r
                    draw.ellipse([ex - 0.3 * r, cy - r, ex + 0.3 * r, cy - 0.4 * r], fill=color)
            img.save(out / name / f"{k:02d}.jpg", quality=92)
    rows = "\n".join(f"{name},{cls}" for name, cls, _, _ in BUILTIN_SUBJECTS)
    lists = []
    for heading, prompts in BUILTIN_PROMPTS.items():
        entries = ",\n".join(f"'{p}'.format(unique_token, class_token)" for p in prompts)
        lists.append(f"{heading}\n\nprompt_list = [\n{entries}\n]\n")
    (out / PROMPTS_FILE).write_text(
        f"Classes\n\nsubject_name,class\n{rows}\n\nPrompts\n\n" + "\n".join(lists), encoding="utf-8"
    )
    return out


# --- the stage ---------------------------------------------------------------------------------------------------
def build_dreambench(params, out: str | Path | None = None) -> list[Subject]:
    """The `dreambench` stage: get the set (builtin / download / local folder), check it, write `out`."""
    cfg = params.dreambench
    out = Path(out or cfg.out)
    with tempfile.TemporaryDirectory(prefix="dreambench-") as work:
        work = Path(work)
        if cfg.source == "builtin":
            src = write_builtin(work / "dataset", cfg.seed, cfg.builtin_size)
        elif (world := plugin(DREAMBENCH, cfg.source, "dreambench.source")) is not None:
            src = world(params, work / "dataset")
        elif cfg.source == "download":
            archive = download(cfg.url, work / "archive", cfg.sha256, cfg.retries, cfg.retry_wait)
            src = extract_dataset(archive, cfg.archive_dir, work / "dataset")
        else:
            src = locate(cfg.source)
        subjects, warnings = load_dataset(src, cfg.live_classes)
        for warning in warnings:
            log.warning(warning)
            print(f"warning: {warning}")
        written = []
        with atomic_dir(out) as tmp:
            for name in (PROMPTS_FILE, *EXTRA_FILES):
                if (src / name).is_file():
                    shutil.copy2(src / name, tmp / name)
            for s in subjects:
                (tmp / s.subject).mkdir()
                for image in s.images:
                    shutil.copy2(image, tmp / s.subject / image.name)
                written.append(
                    Subject(s.subject, s.class_word, s.live, [out / s.subject / p.name for p in s.images], s.prompts)
                )
            write_json(tmp / SUBJECTS_JSON, [s.to_json() for s in written])
    return written

"""The demo's clickable examples, found on disk when the app starts:

* the DreamBench subjects, when the `dreambench` stage has written `data/dreambench/subjects.json`: each
  subject's concept image (`mask.concept_index`), its SAM mask from the `mask` stage when present
  (`data/masks/dreambench/<subject>.png`), its first published prompt with S* and that prompt family's
  lambda (params `evaluate.families`);
* every image in the example folders (`elite demo --examples DIR`, default `examples/concepts/`):
  `<name>.png|jpg`, optionally `<name>_mask.png` (white = object) and `<name>.txt` (the prompt, with S*;
  default "a photo of a S*", lambda by the same families).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elite.errors import EliteError

DEFAULT_FOLDERS = (Path("examples/concepts"),)
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MASK_SUFFIX = "_mask"
DEFAULT_PROMPT = "a photo of a S*"
MAX_EXAMPLES = 32


@dataclass(frozen=True)
class Example:
    image: Path
    mask: Path | None
    prompt: str
    lam: float

    def row(self) -> list:
        return [str(self.image), str(self.mask) if self.mask else None, self.prompt, self.lam]


def dreambench_examples(params) -> list[Example]:
    from elite.data import paths
    from elite.evaluate.dreambench import fill, read_subjects
    from elite.evaluate.generate import family_of

    if not paths.DREAMBENCH_SUBJECTS.is_file():
        return []
    out = []
    for row in read_subjects(paths.DREAMBENCH_SUBJECTS):
        images, prompts = row["images"], row["prompts"]
        if (
            params.mask.concept_index >= len(images)
            or not prompts
            or not Path(images[params.mask.concept_index]).is_file()
        ):
            continue
        mask = paths.MASKS / "dreambench" / f"{row['subject']}.png"
        out.append(
            Example(
                Path(images[params.mask.concept_index]),
                mask if mask.is_file() else None,
                fill(prompts[0], "S*", ""),
                family_of(prompts[0], params.evaluate.families)[1],
            )
        )
    return out


def folder_examples(folder: Path, families) -> list[Example]:
    from elite.evaluate.generate import family_of

    out = []
    for image in sorted(
        p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and not p.stem.endswith(MASK_SUFFIX)
    ):
        masks = [image.with_name(f"{image.stem}{MASK_SUFFIX}{s}") for s in SUFFIXES]
        text = image.with_suffix(".txt")
        prompt = " ".join(text.read_text().split()) if text.is_file() else DEFAULT_PROMPT
        out.append(
            Example(
                image,
                next((m for m in masks if m.is_file()), None),
                prompt,
                family_of(prompt.replace("S*", "{0}"), families)[1],
            )
        )
    return out


def find_examples(params, folders: list[Path] | None = None) -> list[Example]:
    """DreamBench subjects first, then the example folders (missing folders are skipped unless named)."""
    named = folders is not None
    found = dreambench_examples(params)
    for folder in folders if named else DEFAULT_FOLDERS:
        if not Path(folder).is_dir():
            if named:
                raise EliteError(f"{folder}: examples folder not found (--examples)")
            continue
        found += folder_examples(Path(folder), params.evaluate.families)
    return found[:MAX_EXAMPLES]

"""The concepts of the training sample grids (`sample_every`): held-out concepts, not training rows.

`sample_subjects` names a DreamBench subjects file (`data/dreambench/subjects.json`, written by the
dreambench stage): the grids show the first `sample_count` subjects' concept images (images[0]), each with
its SAM mask from `sample_masks` (written by the mask stage) when there is one. Without that file (e.g.
`dvc repro train_global` before the dreambench stage ran) the first training rows stand in, with a warning.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from elite.errors import EliteError
from elite.images import open_image, open_mask

log = logging.getLogger("elite.train")


@dataclass
class SampleConcept:
    name: str
    image: Image.Image
    mask: Image.Image | None


def sample_concepts(cfg, dataset, with_mask: bool) -> list[SampleConcept]:
    """The concepts every sample grid of this stage shows, in order."""
    subjects = Path(cfg.sample_subjects) if cfg.sample_subjects else None
    if subjects is not None and subjects.is_file():
        return held_out(subjects, Path(cfg.sample_masks), cfg.sample_count)
    if subjects is not None:
        log.warning("%s not found (run `elite dreambench`): the sample grids show training rows instead", subjects)
    count = min(cfg.sample_count, len(dataset.rows))
    concepts = []
    for i in range(count):
        crop, mask = dataset.crop(i, cfg.crop_pad[0], with_mask=with_mask and dataset.rows[i].mask is not None)
        concepts.append(SampleConcept(f"row-{i}", crop, mask))
    return concepts


def held_out(subjects: Path, masks: Path, count: int) -> list[SampleConcept]:
    try:
        rows = json.loads(subjects.read_text())[:count]
        pairs = [(row["subject"], row["images"][0]) for row in rows]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise EliteError(f"{subjects}: not a DreamBench subjects file ({exc}); run `elite dreambench` again") from None
    concepts = []
    for name, path in pairs:
        if (
            not isinstance(name, str)
            or Path(name).name != name
            or Path(path).is_absolute()
            or ".." in Path(path).parts
        ):
            raise EliteError(
                f"{subjects}: subject {name!r} / image {path!r} must be a plain name and a path inside the "
                f"repository; run `elite dreambench` again"
            )
        image = open_image(path)
        mask_file = masks / f"{name}.png"
        mask = None
        if mask_file.is_file():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mask = open_mask(mask_file, image.size)
        concepts.append(SampleConcept(name, image, mask))
    return concepts

"""params.yaml sections of the data stages: `download`, `curate` and `mask`.

Paths of stage inputs and outputs are fixed by the stage contract (docs/ARCHITECTURE.md) and live
in `elite.data.paths`; the sections hold what a user tunes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from elite.config.base import Section


class DownloadConfig(Section):
    # "synthetic": write a small generated split in the official release layout, then import it;
    # "toy": write the toy world (params `toy`: size, seed, held-out identities left out) in that layout;
    # "zoo": FiftyOne's zoo (`open-images-v7`), resumable, into zoo_dir;
    # anything else: a local directory laid out like the official release (or FiftyOne's split layout)
    source: str = Field(min_length=1)
    split: Literal["train", "validation", "test"]
    dataset: str = Field(min_length=1)  # name of the persistent FiftyOne dataset
    zoo_dir: str = Field(min_length=1)  # FiftyOne zoo download folder (kept between runs: resumes)
    max_samples: int | None = Field(ge=1)  # zoo only: partial download (null = the whole split)
    retries: int = Field(ge=1)  # zoo only: attempts before giving up
    retry_wait: float = Field(ge=0)  # zoo only: seconds before the first retry (doubles each time)
    workers: int = Field(ge=1)  # threads for image downloads (zoo) and header checks
    mask_aspect_tolerance: float = Field(ge=0)  # a release mask of another size but this close an aspect is resized
    synthetic_images: int = Field(ge=2)  # source=synthetic: number of generated scenes
    synthetic_size: list[int] = Field(min_length=2, max_length=2)  # [min, max] image side in pixels
    synthetic_objects: list[int] = Field(min_length=2, max_length=2)  # [min, max] objects per scene
    synthetic_mask_fraction: float = Field(ge=0, le=1)  # share of objects that get a release mask
    toy_images: int = Field(ge=1)  # source=toy: scenes written (none with a held-out identity)
    seed: int


class CurateConfig(Section):
    min_area: float = Field(ge=0, le=1)  # stage 1: box area / image area lower bound
    max_area: float = Field(ge=0, le=1)  # stage 1: upper bound
    min_side: int = Field(ge=1)  # stage 2: the box must be at least this many pixels per side
    max_aspect: float = Field(ge=1)  # stage 2: long side / short side of the box at most this
    drop_group_of: bool  # drop IsGroupOf boxes ("a bunch of flowers")
    drop_depiction: bool  # drop IsDepiction boxes (drawings, toys, statues of the class)
    drop_duplicates: bool  # drop images whose file is byte-identical to an earlier image
    local_from_boxes: bool  # stage 2 also takes boxes without a release mask (SAM masks them)
    match_iou: float = Field(gt=0, le=1)  # box IoU at which a box and a release mask are the same object
    workers: int = Field(ge=1)  # threads for the image checks


class MaskConfig(Section):
    device: Literal["auto", "cpu", "cuda"]
    cpu_threads: int = Field(ge=0)  # torch CPU threads while masking (0 = torch's default); 1 suits tiny models
    multimask: bool  # ask SAM for 3 masks per box and keep the one with the best predicted IoU
    min_mask_pixels: int = Field(ge=1)  # a SAM mask smaller than this is empty (row dropped if no release mask)
    concept_index: int = Field(ge=0)  # DreamBench: which image of a subject is the concept image
    concept_extra_images: int = Field(ge=0)  # ... and how many of the images after it get masks too (several images)
    concept_box: Literal["image", "auto"]  # prompt box: the whole image, or SAM's dominant automatic mask
    auto_points_per_side: int = Field(ge=1)  # concept_box=auto: SamAutomaticMaskGenerator settings
    auto_pred_iou_thresh: float = Field(ge=0, le=1)
    auto_stability_thresh: float = Field(ge=0, le=1)
    auto_max_area: float = Field(
        gt=0, le=1
    )  # automatic masks covering more than this share of the image are background

"""params.yaml sections `dreambench` (the DreamBench data stage) and `evaluate` (the DreamBench evaluation)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from elite.config.base import Section


class DreambenchConfig(Section):
    # "builtin" = write a tiny generated set in the official layout; "download" = fetch `url`;
    # anything else = a local folder in the official layout (the `dataset/` folder or its parent)
    source: str
    url: str  # archive (zip or tar) of github.com/google/dreambooth; its `archive_dir` folder is the data set
    sha256: str | None  # checked against the downloaded archive when set
    retries: int = Field(ge=1)  # download tries in all (connection errors, timeouts, 5xx, cut-off bodies)
    retry_wait: float = Field(ge=0)  # seconds before the first retry, doubled each time
    archive_dir: str  # name of the data set folder inside the archive
    out: str  # official layout + subjects.json are written here
    live_classes: list[str] = Field(min_length=1)  # class words of the live subjects (the file does not mark them)
    seed: int  # for the builtin set
    builtin_size: int = Field(ge=32)  # side of the builtin set's images, pixels
    toy_images: int = Field(ge=2)  # source=toy: renders per held-out concept (00.jpg is the concept image)


class PromptFamily(Section):
    name: str
    pattern: str  # regular expression searched in the published template ("" matches every template)
    lam: float = Field(ge=0)  # local-branch weight lambda for this family's prompts


class EvaluateConfig(Section):
    weights: str  # ELITE weights folder (models/elite; models/pretrained/elite before training)
    base: str  # Stable Diffusion folder the weights belong to (also the no-concept baseline)
    clip_model: str  # CLIP for CLIP-I / CLIP-T (paper: ViT-B/32, as Textual Inversion's clip_eval)
    dino_model: str  # DINO ViT for DINO-I (paper: ViT-S/16)
    probes: str  # toy world: identity/scene probes (with the set's toy_concepts.json: identity and scene accuracy)
    subjects_file: str  # data/dreambench/subjects.json
    masks: str  # folder with <subject>.png, the SAM mask of each subject's concept image (mask stage)
    out: str  # generated images, grids, report
    metrics: str  # DVC metrics JSON
    sweep_csv: str  # DVC plot of the lambda sweep
    concept_image: int = Field(ge=0)  # index into each subject's images: the one image ELITE sees
    subjects: list[str] | None  # null = every subject in subjects_file
    max_prompts: int | None = Field(ge=1)  # null = all prompts; else this many, evenly spaced over the list
    extra_prompts: list[str]  # templates in the published form added to every subject, e.g. "a photo of a {0} {1}"
    placeholder: str  # fills {0}: the concept's pseudo-word in ELITE's prompts
    class_word_in_prompt: bool  # fill {1} with the class word in ELITE's prompts (false: drop it)
    families: list[PromptFamily] = Field(min_length=1)  # first match decides a prompt's family and lambda
    images_per_prompt: int = Field(ge=1)
    steps: int = Field(ge=1)
    guidance: float
    scheduler: Literal["lms", "dpm++", "ddim", "euler", "pndm"]
    seed: int  # base seed; each image's seed is derived from it, the subject, the prompt and the index
    device: str  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    dtype: Literal["float32", "float16", "bfloat16"]  # generation precision on the GPU (the CPU uses float32)
    cpu_threads: int = Field(ge=0)  # torch CPU threads (0 = torch's default); tiny smoke models run fastest on 1
    baseline: bool  # also generate with the base model and the class word instead of S* (no-concept row)
    global_row: bool  # also ELITE at lambda 0 (the global word only) on every prompt: the paper's Table 3 ablation
    multi_images: list[Annotated[int, Field(ge=2)]]  # rows of the concept from its first k images ([] = none)
    pairs: int = Field(ge=0)  # two-concept rows for this many pairs of subjects (i with i + 1); toy world only
    pair_prompts: list[str]  # their templates: {0} the first concept (S1*), {1} the second (S2*)
    sweep_lams: list[float]  # lambda values of the sweep (paper Fig. 12: 0 to 1.2); [] = no sweep
    sweep_subjects: int = Field(ge=1)  # the sweep runs on the first this-many evaluated subjects
    sweep_prompts: int = Field(ge=1)  # ... and this many of their prompts, evenly spaced
    sweep_images: int = Field(ge=1)  # ... with this many images each
    sweep_blocks: float | None = Field(ge=0)  # the sweep by block: this lambda on one part / block; null = none
    metric_batch: int = Field(ge=1)  # images per forward pass of the metric models
    grid_tile: int = Field(ge=16)  # pixels per image in the per-subject grids
    fiftyone_dataset: str | None  # FiftyOne dataset of the generations with scores (null = none)

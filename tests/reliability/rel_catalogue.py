"""The catalogue of issue 9 as a table: every bad or unusual input, how to feed it through the Python API
and through the command line, and what must happen.

`expect=None`: it works (the API function checks the result is sensible; the command line exits 0).
`expect="regex"`: the API raises EliteError with that one line, and the command line exits 2 with exactly
that one `error:` line on stderr, no traceback, and nothing written.
Limits and rules (docs/reliability.md): images over 100 MP are refused from their header;
masks are object where the channel mean is >= 128, resized nearest (with a warning) to the image.
Areas: images, masks, prompts, numbers, config, data (manifests, CSVs, archives) and requests (payloads of
the registered model, Python API only).
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from rel_helpers import REPO, archive, source_mask, source_rgb, write_params


@dataclass
class Ctx:
    d: Path  # generated images and masks (rel_helpers.make_inputs)
    root: Path  # scratch: one folder per case
    models: Path  # the session's smoke models
    pipe: object  # the session's ElitePipeline

    def folder(self, case_id: str) -> Path:
        path = self.root / case_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def generate_argv(self, case_id: str, image: str, prompt: str = "a S* on the beach", *extra) -> list[str]:
        return [
            "generate",
            "--base",
            str(self.models / "base"),
            "--weights",
            str(self.models / "elite"),
            "--steps",
            "1",
            "--seed",
            "0",
            "--image",
            str(self.d / image),
            "--prompt",
            prompt,
            "--out",
            str(self.folder(case_id) / "out.png"),
            *map(str, extra),
        ]


@dataclass
class Case:
    id: str
    area: str
    expect: str | None  # None = works; else the pattern of the one error line
    api: Callable[[Ctx], None]
    cli: Callable[[Ctx], tuple[list[str], Path | None]] | None = None  # argv and working directory (None: repo)
    cli_warning: str | None = None  # a `warning:` line the command line must print
    writes: Callable[[Ctx], list[Path]] = field(default=lambda ctx: [])  # outputs that must not exist after an error

    def __repr__(self) -> str:
        return self.id


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    assert torch.allclose(a, b, atol=tol, rtol=0), float((a - b).abs().max())


def same_concept(x, y, tol: float = 1e-5) -> None:
    close(x.words, y.words, tol)
    close(x.local_tokens, y.local_tokens, tol)


def finite(concept) -> None:
    assert torch.isfinite(concept.words).all() and torch.isfinite(concept.local_tokens).all()


def rgb_of(ctx: Ctx, name: str) -> np.ndarray:
    from elite.images import open_image

    return np.asarray(open_image(ctx.d / name)).astype(int)


# --- images ----------------------------------------------------------------------------------------------------
def image_error(case_id: str, image: str, expect: str) -> Case:
    return Case(
        case_id,
        "images",
        expect,
        lambda ctx: ctx.pipe.encode_concept(ctx.d / image),
        lambda ctx: (ctx.generate_argv(case_id, image), None),
        writes=lambda ctx: [ctx.folder(case_id) / "out.png"],
    )


def image_ok(case_id: str, image: str, check: Callable[[Ctx], None], cli: bool = False) -> Case:
    return Case(
        case_id, "images", None, check, (lambda ctx: (ctx.generate_argv(case_id, image), None)) if cli else None
    )


def _cmyk(ctx: Ctx) -> None:
    assert np.abs(rgb_of(ctx, "cmyk.jpg") - source_rgb()).mean() < 6  # CMYK JPEG comes back as the same colours
    finite(ctx.pipe.encode_concept(ctx.d / "cmyk.jpg"))


def _gray16(ctx: Ctx) -> None:
    rgb = rgb_of(ctx, "gray16.png")
    expected = np.asarray(Image.open(ctx.d / "gray16.png")).astype(float) / 257  # the top 8 bits, not rescaled
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert np.abs(rgb[..., 0] - expected).max() <= 0.5 + 1e-9
    finite(ctx.pipe.encode_concept(ctx.d / "gray16.png"))


def _palette(ctx: Ctx) -> None:
    assert (rgb_of(ctx, "palette.png") == np.asarray(Image.open(ctx.d / "palette.png").convert("RGB"))).all()
    finite(ctx.pipe.encode_concept(ctx.d / "palette.png"))


def _palette_transparent(ctx: Ctx) -> None:
    with Image.open(ctx.d / "palette_transparent.png") as img:
        index, colours = np.asarray(img), np.asarray(img.convert("RGB"))
        clear = index == img.info["transparency"]
    rgb = rgb_of(ctx, "palette_transparent.png")
    assert clear.any() and (rgb[clear] == 0).all() and (rgb[~clear] == colours[~clear]).all()


def _rgba(ctx: Ctx) -> None:
    rgb = rgb_of(ctx, "rgba.png")
    assert (rgb[:, :24] == 0).all() and (rgb[:, 24:] == source_rgb()[:, 24:]).all()  # transparent -> black background
    finite(ctx.pipe.encode_concept(ctx.d / "rgba.png"))


def _gray(ctx: Ctx) -> None:
    rgb = rgb_of(ctx, "gray.png")
    assert (rgb == np.asarray(Image.open(ctx.d / "gray.png"))[..., None]).all()
    finite(ctx.pipe.encode_concept(ctx.d / "gray.png"))


def _one_pixel(ctx: Ctx) -> None:
    # a 1x1 image is a uniform image of its colour at any size
    same_concept(ctx.pipe.encode_concept(ctx.d / "one.png"), ctx.pipe.encode_concept(ctx.d / "uniform16.png"))


def _wide(ctx: Ctx) -> None:
    from elite.images import open_image

    assert open_image(ctx.d / "wide.png").size == (20000, 20)
    finite(ctx.pipe.encode_concept(ctx.d / "wide.png"))


def _exif(ctx: Ctx) -> None:
    assert (rgb_of(ctx, "exif_rotated.png") == source_rgb()).all()  # stored sideways, read upright
    same_concept(ctx.pipe.encode_concept(ctx.d / "exif_rotated.png"), ctx.pipe.encode_concept(ctx.d / "ok.png"), 0)


IMAGES = [
    image_error("image-missing", "nope.jpg", r"nope\.jpg: image file not found"),
    image_error("image-empty", "empty.jpg", r"empty\.jpg: image file is empty"),
    image_error("image-is-a-folder", "a_folder.png", r"a_folder\.png: image file not found"),
    image_error("jpeg-truncated", "truncated.jpg", r"truncated\.jpg: not a readable image"),
    image_error("png-truncated", "truncated.png", r"truncated\.png: not a readable image"),
    image_error("jpeg-corrupt", "corrupt.jpg", r"corrupt\.jpg: not a readable image"),
    image_error("png-corrupt", "corrupt.png", r"corrupt\.png: not a readable image"),
    image_error("not-an-image", "text.jpg", r"text\.jpg: not a readable image"),
    image_error(
        "image-12000x12000", "big_12000.png", r"big_12000\.png: image is 12000x12000, over the 100,000,000-pixel limit"
    ),
    image_error("image-pil-bomb", "bomb_20000.png", r"bomb_20000\.png: image is over the 100,000,000-pixel limit"),
    image_ok("image-cmyk-jpeg", "cmyk.jpg", _cmyk, cli=True),
    image_ok("image-16bit-png", "gray16.png", _gray16, cli=True),
    image_ok("image-palette", "palette.png", _palette),
    image_ok("image-palette-transparency", "palette_transparent.png", _palette_transparent),
    image_ok("image-rgba", "rgba.png", _rgba),
    image_ok("image-grayscale", "gray.png", _gray),
    image_ok("image-1x1", "one.png", _one_pixel),
    image_ok("image-20000x20", "wide.png", _wide),
    image_ok("image-exif-rotated", "exif_rotated.png", _exif, cli=True),
]


# --- masks (of ok.png) -------------------------------------------------------------------------------------------
def mask_of(ctx: Ctx, name: str) -> np.ndarray:
    from elite.images import open_mask

    return np.asarray(open_mask(ctx.d / name, (48, 64))) > 0


def mask_error(case_id: str, mask: str, expect: str) -> Case:
    return Case(
        case_id,
        "masks",
        expect,
        lambda ctx: ctx.pipe.encode_concept(ctx.d / "ok.png", ctx.d / mask),
        lambda ctx: (ctx.generate_argv(case_id, "ok.png", "a S*", "--mask", ctx.d / mask), None),
        writes=lambda ctx: [ctx.folder(case_id) / "out.png"],
    )


def mask_ok(case_id: str, mask: str, cli: bool = False, warning: str | None = None) -> Case:
    def check(ctx: Ctx) -> None:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            got = mask_of(ctx, mask)
            concept = ctx.pipe.encode_concept(ctx.d / "ok.png", ctx.d / mask)
        assert (got == source_mask()).all()  # the same object mask as the plain 0/255 single-channel file
        same_concept(concept, ctx.pipe.encode_concept(ctx.d / "ok.png", ctx.d / "mask.png"))
        messages = [str(w.message) for w in seen]
        assert all(warning in m for m in messages) and (bool(messages) == bool(warning)), messages

    cli_fn = (
        (lambda ctx: (ctx.generate_argv(case_id, "ok.png", "a S*", "--mask", ctx.d / mask), None)) if cli else None
    )
    return Case(case_id, "masks", None, check, cli_fn, cli_warning=warning)


def _white_mask(ctx: Ctx) -> None:  # all white = the whole image is the object = no mask
    same_concept(
        ctx.pipe.encode_concept(ctx.d / "ok.png", ctx.d / "mask_white.png"), ctx.pipe.encode_concept(ctx.d / "ok.png")
    )


MASKS = [
    mask_error("mask-missing", "nope.png", r"nope\.png: mask file not found"),
    mask_error("mask-empty-file", "mask_empty.png", r"mask_empty\.png: mask file is empty"),
    mask_error("mask-corrupt", "mask_corrupt.png", r"mask_corrupt\.png: not a readable mask image"),
    mask_error(
        "mask-12000x12000", "mask_big.png", r"mask_big\.png: mask image is 12000x12000, over the 100,000,000-pixel"
    ),
    mask_error("mask-all-black", "mask_black.png", r"mask_black\.png: mask is all black \(no object\)"),
    mask_ok("mask-wrong-size", "mask_half.png", cli=True, warning="mask is 24x32, image is 48x64; resized (nearest)"),
    Case("mask-all-white", "masks", None, _white_mask),
    mask_ok("mask-non-binary-gray", "mask_gray.png"),  # 128 is object, 127 background
    mask_ok("mask-non-binary-color", "mask_color.png"),  # channel mean 128 object, 127.7 background
    mask_ok("mask-rgb-vs-l", "mask_rgb.png"),
    mask_ok("mask-16bit", "mask16.png"),
    mask_ok("mask-alpha", "mask_alpha.png"),  # transparent = background
]


# --- prompts and numbers -------------------------------------------------------------------------------------------
def sample(ctx: Ctx, prompt: str = "a S* on the beach", **kw) -> None:
    concept = ctx.pipe.encode_concept(ctx.d / "ok.png")
    ctx.pipe(
        prompt,
        concept=concept,
        num_inference_steps=kw.pop("steps", 1),
        generator=torch.Generator().manual_seed(0),
        **kw,
    )


def prompt_error(case_id: str, prompt: str, expect: str) -> Case:
    return Case(
        case_id,
        "prompts",
        expect,
        lambda ctx: sample(ctx, prompt),
        lambda ctx: (ctx.generate_argv(case_id, "ok.png", prompt), None),
        writes=lambda ctx: [ctx.folder(case_id) / "out.png"],
    )


LONG = "a S* " + "very " * 80 + "big dog"  # 1 + 1 (a) + 1 (S*) + 82 words + 1 = 86 tokens


def number_error(case_id: str, api_kw: dict, cli_args: list[str] | None, expect: str) -> Case:
    cli = (lambda ctx: (ctx.generate_argv(case_id, "ok.png", "a S*", *cli_args), None)) if cli_args else None
    return Case(
        case_id,
        "numbers",
        expect,
        lambda ctx: sample(ctx, "a S*", **api_kw),
        cli,
        writes=lambda ctx: [ctx.folder(case_id) / "out.png"],
    )


PROMPTS = [
    prompt_error("prompt-no-placeholder", "a dog on the beach", r"has no placeholder: write 'S\*'"),
    prompt_error("prompt-two-placeholders", "a S* next to a S*", r"has 2 placeholders; use exactly one 'S\*'"),
    prompt_error("prompt-over-77-tokens", LONG, r"is 86 tokens with the concept word\(s\); the text encoder takes 77"),
    prompt_error("prompt-empty", "", r"prompt '' has no placeholder"),
    prompt_error("prompt-bare-s", "a S on the beach", r"has no placeholder"),  # a bare S only with --allow-bare-s
]

NUMBERS = [
    number_error("lambda-negative", {"lam": -0.5}, ["--lam", "-0.5"], r"lam must be a finite number >= 0.*got -0\.5"),
    number_error("lambda-nan", {"lam": float("nan")}, ["--lam", "nan"], r"lam must be a finite number >= 0.*got nan"),
    number_error("lambda-inf", {"lam": float("inf")}, ["--lam", "inf"], r"lam must be a finite number >= 0.*got inf"),
    number_error("steps-zero", {"steps": 0}, ["--steps", "0"], r"num_inference_steps must be an integer >= 1, got 0"),
    number_error(
        "steps-negative", {"steps": -3}, ["--steps", "-3"], r"num_inference_steps must be an integer >= 1, got -3"
    ),
    number_error("steps-fraction", {"steps": 2.5}, None, r"num_inference_steps must be an integer >= 1, got 2\.5"),
    number_error(
        "steps-not-a-number",
        {"steps": "ten"},
        ["--steps", "ten"],
        r"num_inference_steps must be an integer|argument --steps: invalid int value: 'ten'",
    ),
    number_error(
        "scheduler-unknown",
        {"scheduler": "magic"},
        ["--scheduler", "magic"],
        r"unknown scheduler 'magic'; choose one of: lms, dpm\+\+, ddim, euler, pndm",
    ),
    number_error(
        "guidance-nan", {"guidance_scale": float("nan")}, ["--guidance", "nan"], r"guidance_scale must be finite"
    ),
    number_error(
        "num-images-zero", {"num_images_per_prompt": 0}, ["--num-images", "0"], r"num_images_per_prompt must be >= 1"
    ),
]


# --- configuration -------------------------------------------------------------------------------------------------
def params_variant(
    ctx: Ctx, case_id: str, edit: Callable[[dict], None] | None = None, text: str | None = None
) -> Path:
    path = ctx.folder(case_id) / "params.yaml"
    if text is None:
        raw = yaml.safe_load((REPO / "params.yaml").read_text())
        raw["profile"] = "smoke"
        edit(raw)
        text = yaml.safe_dump(raw, sort_keys=False)
    path.write_text(text)
    return path


def config_error(case_id: str, expect: str, edit=None, text=None) -> Case:
    def api(ctx: Ctx) -> None:
        from elite.config import load_params

        load_params(params_variant(ctx, case_id, edit, text))

    def cli(ctx: Ctx):
        return ["--params", str(params_variant(ctx, case_id, edit, text)), *ctx.generate_argv(case_id, "ok.png")], None

    return Case(case_id, "config", expect, api, cli, writes=lambda ctx: [ctx.folder(case_id) / "out.png"])


def _set(section: str, key: str, value, profile: str | None = None):
    def edit(raw: dict) -> None:
        target = raw[section].setdefault(profile, {}) if profile else raw[section]
        target[key] = value
        if not profile:
            raw[section].get("smoke", {}).pop(key, None)

    return edit


def _rename(section: str, key: str, new: str):
    def edit(raw: dict) -> None:
        raw[section][new] = raw[section].pop(key)

    return edit


def _weights_case(case_id: str, expect: str, make: Callable[[Ctx, Path], None], what: str = "weights") -> Case:
    def target(ctx: Ctx) -> Path:
        path = ctx.folder(case_id) / what
        if not path.exists():
            make(ctx, path)
        return path

    def api(ctx: Ctx) -> None:
        from elite.pipeline import ElitePipeline

        if what == "weights":
            ElitePipeline.from_pretrained(ctx.models / "base", target(ctx))
        else:
            ElitePipeline.from_pretrained(target(ctx), ctx.models / "elite")

    def cli(ctx: Ctx):
        argv = ctx.generate_argv(case_id, "ok.png")
        argv[argv.index("--weights" if what == "weights" else "--base") + 1] = str(target(ctx))
        return argv, None

    return Case(case_id, "config", expect, api, cli, writes=lambda ctx: [ctx.folder(case_id) / "out.png"])


def _damaged_weights(ctx: Ctx, path: Path) -> None:
    shutil.copytree(ctx.models / "elite", path)
    weights = path / "elite.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])  # what a killed copy would leave


def _rename_section(name: str, new: str):
    def edit(raw: dict) -> None:
        raw[new] = raw.pop(name)

    return edit


def _drop_section(raw: dict) -> None:
    raw.pop("evaluate")


CONFIG = [
    config_error(
        "params-typo-key",
        r"unknown key generate\.guidence; did you mean 'guidance'\?",
        _rename("generate", "guidance", "guidence"),
    ),
    config_error(
        "params-typo-section",
        r"unknown key genrate; did you mean 'generate'\?",
        _rename_section("generate", "genrate"),
    ),
    config_error(
        "params-wrong-type",
        r"generate\.steps: Input should be a valid integer.*got 'ten'",
        _set("generate", "steps", "ten", "smoke"),
    ),
    config_error(
        "params-lambda-negative",
        r"generate\.lam: Input should be greater than or equal to 0",
        _set("generate", "lam", -1.0),
    ),
    config_error(
        "params-lambda-nan",
        r"generate\.lam: Input should be greater than or equal to 0",
        _set("generate", "lam", float("nan")),
    ),
    config_error("params-missing-section", r"missing section evaluate", _drop_section),
    config_error("params-not-yaml", r"not valid YAML", text="generate: [unclosed\n  - x: {\n"),
    config_error(
        "params-unknown-profile",
        r"profile must be one of smoke, toy, paper, got 'fast'",
        lambda raw: raw.update(profile="fast"),
    ),
    _weights_case("weights-folder-missing", r"no ELITE weights .*`elite prepare-models`", lambda ctx, p: None),
    _weights_case("weights-file-damaged", r"elite\.safetensors: cannot load these weights", _damaged_weights),
    _weights_case(
        "base-folder-missing",
        r"folder not found \(for the VAE\); build or fetch the models with `elite prepare-models`",
        lambda ctx, p: None,
        what="base",
    ),
]


# --- data: manifests, CSVs, archives ---------------------------------------------------------------------------------
def project(ctx: Ctx, case_id: str, **sections) -> Path:
    """A scratch repository root for a stage: params.yaml with `sections` overrides."""
    root = ctx.folder(case_id)
    if not (root / "params.yaml").is_file():
        write_params(root / "params.yaml", **sections)
    return root


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def stage_case(
    case_id: str,
    expect: str,
    build: Callable[[Ctx, Path], None],
    api: Callable[[Ctx, Path], None],
    argv: list[str],
    writes: list[str],
    sections: Callable[[Ctx, Path], dict] | None = None,
) -> Case:
    """A case run from its own repository root: `build` writes the bad input, `api` calls the reader or stage
    function, the command line runs `elite --params params.yaml ARGV` there."""

    def root(ctx: Ctx) -> Path:
        folder = ctx.folder(case_id)
        if not (folder / "params.yaml").is_file():
            write_params(folder / "params.yaml", **(sections(ctx, folder) if sections else {}))
            build(ctx, folder)
        return folder

    def run_api(ctx: Ctx) -> None:
        import contextlib

        folder = root(ctx)
        with contextlib.chdir(folder):
            api(ctx, folder)

    return Case(
        case_id,
        "data",
        expect,
        run_api,
        lambda ctx: (["--params", "params.yaml", *argv], root(ctx)),
        writes=lambda ctx: [root(ctx) / w for w in writes],
    )


def curated(image: str, image_id: str = "0001a2b3c4d5e6f7") -> Callable[[Ctx, Path], None]:
    def build(ctx: Ctx, root: Path) -> None:
        shutil.copy(ctx.d / "ok.jpg", root / "inside.jpg")
        jsonl(
            root / "data/curated/local.jsonl",
            [
                {
                    "image": "inside.jpg",
                    "box": [12, 16, 36, 48],
                    "label": "Dog",
                    "image_id": "0000aaaabbbbcccc",
                    "mask": None,
                },
                {
                    "image": image.format(d=ctx.d),
                    "box": [12, 16, 36, 48],
                    "label": "Dog",
                    "image_id": image_id,
                    "mask": None,
                },
            ],
        )

    return build


def _read_data_manifest(ctx: Ctx, root: Path) -> None:
    from elite.data.manifest import read_manifest

    read_manifest(Path("data/curated/local.jsonl"))


def _train_sections(ctx: Ctx, root: Path) -> dict:
    return {
        "train_global": {
            "base": str(ctx.models / "base"),
            "init": str(ctx.models / "elite"),
            "manifest": "train.jsonl",
            "out": "weights",
            "metrics": "metrics.json",
            "plot": "plot.csv",
            "checkpoint_dir": "checkpoints",
            "cache_dir": "cache",
            "max_steps": 1,
            "batch_size": 1,
            "gradient_accumulation_steps": 1,
            "resolution": 64,
            "num_workers": 0,
        }
    }


def _train_manifest(ctx: Ctx, root: Path) -> None:
    shutil.copy(ctx.d / "ok.jpg", root / "inside.jpg")
    jsonl(
        root / "train.jsonl",
        [{"image": "inside.jpg", "box": [12, 16, 36, 48]}, {"image": str(ctx.d / "ok.jpg"), "box": [12, 16, 36, 48]}],
    )


def _read_train_manifest(ctx: Ctx, root: Path) -> None:
    from elite.train.data import read_manifest

    read_manifest("train.jsonl", need_mask=False)


def subjects(name: str, image: str) -> Callable[[Ctx, Path], None]:
    def build(ctx: Ctx, root: Path) -> None:
        shutil.copy(ctx.d / "ok.jpg", root / "inside.jpg")
        (root / "data/dreambench").mkdir(parents=True)
        (root / "data/dreambench/subjects.json").write_text(
            json.dumps(
                [
                    {
                        "subject": name,
                        "class": "dog",
                        "live": True,
                        "images": [image.format(d=ctx.d)],
                        "prompts": ["a {0} {1}"],
                    }
                ]
            )
        )

    return build


def _read_subjects(ctx: Ctx, root: Path) -> None:
    from elite.evaluate.dreambench import read_subjects

    read_subjects("data/dreambench/subjects.json")


def damaged_release(csv: str, column: str) -> Callable[[Ctx, Path], None]:
    def build(ctx: Ctx, root: Path) -> None:
        from elite.data.synth import write_synthetic_release

        release = write_synthetic_release(root / "release", "test", 3, [64, 96], [1, 2], 1.0, 0)
        path = release / csv
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0].replace(column, column + "_x")] + lines[1:]) + "\n")

    return build


def _import_release(ctx: Ctx, root: Path) -> None:
    from elite.data.openimages import find_release, import_release

    import_release(find_release(root / "release", "test"), root / "imported" / "test", 1, 0.02)


DATASET = "dreambooth-main/dataset/"
PROMPTS_TXT = b"Classes\n\nsubject_name,class\n"


def evil_archive(
    kind: str, members: dict[str, bytes], links: dict[str, str] | None = None
) -> Callable[[Ctx, Path], None]:
    def build(ctx: Ctx, root: Path) -> None:
        (root / f"main.{kind}").write_bytes(
            archive(kind, {DATASET + "prompts_and_classes.txt": PROMPTS_TXT, **members}, links)
        )

    return build


def _extract(kind: str):
    def api(ctx: Ctx, root: Path) -> None:
        from elite.evaluate.dreambench import extract_dataset

        extract_dataset(root / f"main.{kind}", "dataset", root / "unpacked")

    return api


def _download_sections(kind: str):
    def sections(ctx: Ctx, root: Path) -> dict:
        return {"dreambench": {"source": "download", "url": (root / f"main.{kind}").as_uri(), "retries": 1}}

    return sections


DATA = [
    stage_case(
        "data-manifest-parent-path",
        r"local\.jsonl:2: image '\.\./outside\.jpg' is outside the repository",
        curated("../outside.jpg"),
        _read_data_manifest,
        ["mask"],
        ["data/masks", "metrics"],
    ),
    stage_case(
        "data-manifest-absolute-path",
        r"local\.jsonl:2: image '/.*/ok\.jpg' is outside the repository",
        curated("{d}/ok.jpg"),
        _read_data_manifest,
        ["mask"],
        ["data/masks", "metrics"],
    ),
    stage_case(
        "data-manifest-image-id-path",
        r"local\.jsonl:2: image_id '\.\./\.\./escape' is not a plain Open Images ID",
        curated("inside.jpg", "../../escape"),
        _read_data_manifest,
        ["mask"],
        ["data/masks", "metrics"],
    ),
    stage_case(
        "train-manifest-outside",
        r"train\.jsonl:2: image /.*/ok\.jpg is outside the repository",
        _train_manifest,
        _read_train_manifest,
        ["train-global"],
        ["checkpoints", "weights", "cache", "metrics.json"],
        sections=_train_sections,
    ),
    stage_case(
        "subjects-json-path-name",
        r"subjects\.json: entry 0: subject '\.\./\.\./escape' must be a plain name",
        subjects("../../escape", "inside.jpg"),
        _read_subjects,
        ["evaluate"],
        ["data/eval", "metrics"],
    ),
    stage_case(
        "subjects-json-image-outside",
        r"subjects\.json: subject dog: image '/.*/ok\.jpg' is outside the repository",
        subjects("dog", "{d}/ok.jpg"),
        _read_subjects,
        ["evaluate"],
        ["data/eval", "metrics"],
    ),
    stage_case(
        "csv-missing-bbox-column",
        r"test-annotations-bbox\.csv: missing column\(s\) XMax",
        damaged_release("test-annotations-bbox.csv", "XMax"),
        _import_release,
        ["download"],
        ["data/openimages", "metrics"],
        sections=lambda ctx, root: {"download": {"source": str(root / "release")}},
    ),
    stage_case(
        "csv-missing-segmentation-column",
        r"test-annotations-object-segmentation\.csv: missing column\(s\) MaskPath",
        damaged_release("test-annotations-object-segmentation.csv", "MaskPath"),
        _import_release,
        ["download"],
        ["data/openimages", "metrics"],
        sections=lambda ctx, root: {"download": {"source": str(root / "release")}},
    ),
    stage_case(
        "dreambench-zip-dotdot",
        r"unsafe member path .*\.\./\.\./evil\.txt.* \(leaves the target folder\); refusing",
        evil_archive("zip", {DATASET + "../../evil.txt": b"x"}),
        _extract("zip"),
        ["dreambench"],
        ["data/dreambench", "evil.txt", "unpacked"],
        sections=_download_sections("zip"),
    ),
    stage_case(
        "dreambench-tar-dotdot",
        r"unsafe member path .*\.\./\.\./\.\./evil\.txt.* \(leaves the target folder\)",
        evil_archive("tar", {DATASET + "../../../evil.txt": b"x"}),
        _extract("tar"),
        ["dreambench"],
        ["data/dreambench", "unpacked"],
        sections=_download_sections("tar"),
    ),
    stage_case(
        "dreambench-tar-absolute",
        r"unsafe member path '/tmp/elite-evil\.txt' \(absolute",
        evil_archive("tar", {"/tmp/elite-evil.txt": b"x"}),
        _extract("tar"),
        ["dreambench"],
        ["data/dreambench", "unpacked"],
        sections=_download_sections("tar"),
    ),
    stage_case(
        "dreambench-tar-symlink",
        r"member '.*dataset/passwd' is a link or device; refusing to unpack",
        evil_archive("tar", {}, {DATASET + "passwd": "/etc/passwd"}),
        _extract("tar"),
        ["dreambench"],
        ["data/dreambench", "unpacked"],
        sections=_download_sections("tar"),
    ),
]

CATALOGUE: list[Case] = IMAGES + MASKS + PROMPTS + NUMBERS + CONFIG + DATA
assert len({c.id for c in CATALOGUE}) == len(CATALOGUE)


# --- requests to the registered model (elite.registry.codec: the pyfunc model and the REST server) -------------------
def request_case(case_id: str, expect: str | None, call: Callable[[Ctx], None]) -> Case:
    return Case(case_id, "requests", expect, call)


def _request_mask(ctx: Ctx) -> None:
    from elite.registry.codec import decode_mask, encode_file

    for name in ("mask.png", "mask_color.png", "mask_alpha.png", "mask16.png", "mask_half.png"):
        assert ((np.asarray(decode_mask(encode_file(ctx.d / name), (48, 64))) > 0) == source_mask()).all(), name


def _decode(name: str, mask: bool = False):
    def call(ctx: Ctx) -> None:
        from elite.registry.codec import decode_image, decode_mask

        data = (ctx.d / name).read_bytes() if (ctx.d / name).is_file() else name.encode()
        decode_mask(data, (48, 64)) if mask else decode_image(data)

    return call


def _not_base64(ctx: Ctx) -> None:
    from elite.registry.codec import decode_image

    decode_image("this is not base64 !!")


REQUESTS = [
    request_case(
        "request-image-12000x12000",
        r"^image: image is 12000x12000, over the 100,000,000-pixel limit",
        _decode("big_12000.png"),
    ),
    request_case(
        "request-image-pil-bomb", r"^image: image is over the 100,000,000-pixel limit", _decode("bomb_20000.png")
    ),
    request_case("request-image-truncated", r"^image: not a readable image", _decode("truncated.jpg")),
    request_case("request-image-not-base64", r"^image: not valid base64", _not_base64),
    request_case("request-mask-all-black", r"^mask: mask is all black", _decode("mask_black.png", mask=True)),
    request_case("request-mask-like-open-mask", None, _request_mask),
]

CATALOGUE += REQUESTS
assert len({c.id for c in CATALOGUE}) == len(CATALOGUE)

"""The Gradio page: upload a concept image, mask its object with SAM (clicks, a box, the automatic rule,
the whole image or an uploaded mask), write a prompt with S*, generate.

Every input the generation needs is a component (the concept file, the mask file, prompt, sampler
settings), so the Generate button and the `/generate` API endpoint (`gradio_client`) are one function.
The clicks of a session live in its own `gr.State`; the queue runs one generation and one SAM call at a
time (`concurrency_limit` 1 each), so several users wait in line (the page shows their place) instead of
mixing. A generation yields its images one at a time, so Cancel stops it after the image in progress. User
errors are one-line messages in the page (gr.Warning / gr.Error) and one line in the server log; only our
own bugs log a stack trace.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import secrets
import tempfile
import uuid
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no internet here, and no telemetry

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from starlette.requests import ClientDisconnect, Request  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402

from elite.demo.model import Defaults, DemoModel  # noqa: E402
from elite.demo.segment import (
    BACKGROUND,
    ERASE,
    OBJECT,
    TINT,
    Prompts,
    Segmenter,
    overlay,  # noqa: E402
    paint_view,
    painted_mask,
    to_image_pixels,
)
from elite.errors import EliteError  # noqa: E402
from elite.placeholders import find_placeholders, shown  # noqa: E402
from elite.registry.codec import decode_image, decode_mask  # noqa: E402
from elite.schedulers import SCHEDULERS  # noqa: E402

MODES = {"object click (+)": OBJECT, "background click (-)": BACKGROUND, "box: two corner clicks": None}
LAMS = {"plain prompt (0.8)": 0.8, "editing prompt (0.6)": 0.6}
MAX_IMAGES = 8
MAX_FILE_SIZE = "64mb"
MESSAGE_CHARS = 300  # a message in the page is one line of at most this many characters
SEED_RANGE = 2**31  # a randomized seed is drawn from [0, SEED_RANGE)
log = logging.getLogger("elite.demo")


def one_line(text: str) -> str:
    """A message cut to its first line and MESSAGE_CHARS characters."""
    lines = str(text).strip().splitlines() or [""]
    first = lines[0]
    return first if len(first) <= MESSAGE_CHARS else first[: MESSAGE_CHARS - 1] + "\u2026"


def logged(event: str, exc: Exception) -> str:
    """A user error's message for the page, logged as one line (no stack trace: the input was wrong)."""
    message = one_line(str(exc))
    log.info("refused (%s): %s", event, message)
    return message


def client_gone(request: Request, exc: Exception) -> PlainTextResponse:
    """A client that closed its connection mid-request (an upload abandoned, a tab closed): one line in the log,
    not uvicorn's stack trace; the answer goes nowhere."""
    log.info("client went away during %s %s", request.method, request.url.path)
    return PlainTextResponse("client disconnected", status_code=400)


def refused(event: str, exc: Exception) -> gr.Error:
    """A user error that ends the event: the caller raises the returned gr.Error."""
    return gr.Error(logged(event, exc), print_exception=False)


def warn(event: str, exc: Exception) -> None:
    """A user error answered with a toast; the page goes on."""
    gr.Warning(logged(event, exc))


def file_path(value) -> str | None:
    """The file of an unprocessed input (`preprocess=False`: gradio has checked and cached the upload, and
    hands over its FileData) or of a processed one (a path)."""
    if isinstance(value, dict):
        return value.get("path")
    return value or None


def number(value, name: str, low: float | None = None, high: float | None = None, whole: bool = False) -> float:
    """An unprocessed number input, checked with a one-line message."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EliteError(f"{name}: a number, got {value!r}")
    if whole and float(value) != int(value):
        raise EliteError(f"{name}: a whole number, got {value!r}")
    if low is not None and value < low:
        raise EliteError(f"{name}: {value:g} is below the page's minimum {low:g}")
    if high is not None and value > high:
        raise EliteError(f"{name}: {value:g} is above the page's maximum {high:g}")
    return int(value) if whole else float(value)


@functools.lru_cache(maxsize=4)  # decoded images of up to 100 MP (300 MB) each
def load_concept(path: str) -> Image.Image:
    """The uploaded concept image decoded by the project's decoder (pixel limit, EXIF, any mode -> RGB)."""
    return decode_image(Path(path).read_bytes(), "concept image")


def load_mask(path: str, image: Image.Image) -> np.ndarray:
    return np.asarray(decode_mask(Path(path).read_bytes(), image.size, "mask")) > 0


def resize_note(path: str | None, image: Image.Image, name: str = "mask") -> str:
    """'' or what happens to a mask of another size than its image (it is resized, nearest neighbour)."""
    if not path:
        return ""
    with Image.open(path) as mask:  # the header only
        size = mask.size
    if size == image.size:
        return ""
    return f"{name} {size[0]}x{size[1]} resized to the image's {image.size[0]}x{image.size[1]}"


def describe(mask: np.ndarray | None, how: str) -> str:
    return "**Mask:** the whole image" if mask is None else f"**Mask:** {how}, {mask.mean():.0%} of the image"


class Demo:
    def __init__(
        self,
        model: DemoModel | None,
        defaults: Defaults,
        segmenter: Segmenter | None,
        examples: list,
        load_error: str | None = None,
    ):
        self.model, self.defaults, self.segmenter, self.examples = model, defaults, segmenter, examples
        self.load_error = load_error
        self.tmp = Path(tempfile.mkdtemp(prefix="elite-demo-"))

    # --- helpers -----------------------------------------------------------------------------------
    def save_mask(self, mask: np.ndarray) -> str:
        path = self.tmp / f"mask-{uuid.uuid4().hex[:12]}.png"
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(path)
        return str(path)

    def concept(self, path: str | None) -> Image.Image:
        if not path:
            raise EliteError("upload a concept image first")
        return load_concept(path)

    def need_sam(self) -> Segmenter:
        if self.segmenter is None:
            raise EliteError(
                "SAM is not available here (no models/pretrained/sam; run `elite prepare-models`); "
                "upload a mask or use the whole image"
            )
        return self.segmenter

    # --- events --------------------------------------------------------------------------------------
    def on_concept(self, upload):
        """A new concept image (unprocessed): decoded (bad files are refused here, with a message and cleared
        from the box), clicks and mask reset."""
        path = file_path(upload)
        if not path:
            return gr.skip(), None, None, Prompts(), describe(None, "")
        try:
            image = self.concept(path)
        except EliteError as exc:
            warn("upload", exc)
            return None, None, None, Prompts(), f"**Upload refused:** {one_line(str(exc))}"
        return (
            gr.skip(),
            overlay(image, None),
            None,
            Prompts(),
            describe(None, "") + " (click on the object to mask it)",
        )

    def on_example(self, path, mask_path, prompt, lam):
        try:
            image = self.concept(path)
            mask = load_mask(mask_path, image) if mask_path else None
        except EliteError as exc:
            warn("example", exc)
            return None, Prompts(), f"**Example refused:** {one_line(str(exc))}"
        return overlay(image, mask), Prompts(), describe(mask, "the example's mask")

    def on_click(self, path, prompts: Prompts, mode: str, evt: gr.SelectData):
        try:
            image = self.concept(path)
            x, y = to_image_pixels(evt.index, image.size)
            label = MODES.get(mode, OBJECT)
            if label is None:
                prompts.add_corner(x, y)
                if prompts.corner is not None and not prompts.points:  # the first corner: wait for the second
                    return overlay(image, None, prompts), gr.skip(), prompts, "**Box:** click the opposite corner"
            else:
                prompts.points.append((x, y, label))
            mask = self.need_sam().from_prompts(image, path, prompts)
        except EliteError as exc:
            warn("click", exc)
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        if not mask.any():
            warn(
                "click",
                EliteError(
                    "SAM found no object for these clicks: click elsewhere on the object, draw a box, "
                    "or use the whole image"
                ),
            )
            return overlay(image, None, prompts), None, prompts, describe(None, "")
        n = len(prompts.points)
        how = "SAM from " + ", ".join(
            filter(None, [f"{n} click{'s' * (n != 1)}" if n else "", "a box" if prompts.box else ""])
        )
        return overlay(image, mask, prompts), self.save_mask(mask), prompts, describe(mask, how)

    def on_auto(self, path):
        try:
            image = self.concept(path)
            mask = self.need_sam().auto(image)
        except EliteError as exc:
            warn("auto", exc)
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return overlay(image, mask), self.save_mask(mask), Prompts(), describe(mask, "SAM, most salient object")

    def on_whole(self, path):
        try:
            image = self.concept(path)
        except EliteError as exc:
            warn("whole", exc)
            return gr.skip(), None, Prompts(), describe(None, "")
        return overlay(image, None), None, Prompts(), describe(None, "")

    def on_mask_upload(self, path, mask_path):
        """An uploaded mask: checked (readable, not empty) and shown; the clicks are dropped."""
        try:
            image = self.concept(path)
            mask = load_mask(mask_path, image)
        except EliteError as exc:
            warn("mask upload", exc)
            return gr.skip(), None, Prompts(), f"**Mask refused:** {one_line(str(exc))}"
        note = resize_note(mask_path, image)
        return overlay(image, mask), gr.skip(), Prompts(), describe(mask, f"uploaded ({note})" if note else "uploaded")

    def on_edit(self, path, mask_path):
        """The current mask (or none) into the brush editor."""
        try:
            image = self.concept(path)
            return paint_view(image, load_mask(mask_path, image) if mask_path else None)
        except EliteError as exc:
            warn("edit", exc)
            return gr.skip()

    def on_painted(self, path, mask_path, painted):
        """The mask in use with the brush strokes applied (the clicks are dropped)."""
        try:
            image = self.concept(path)
            mask = painted_mask(painted, load_mask(mask_path, image) if mask_path else None, image.size)
            if not mask.any():
                raise EliteError("the painted mask is empty: paint over the object, or use the whole image")
        except EliteError as exc:
            warn("painted", exc)
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return overlay(image, mask), self.save_mask(mask), Prompts(), describe(mask, "painted")

    def check_request(
        self, image, mask, prompt, negative_prompt, image2, mask2, numbers: dict
    ) -> tuple[dict, list[str]]:
        """The unprocessed inputs of a generation (page or API), checked with the page's one-line messages:
        concept images and masks decoded, the prompt's placeholders, numbers in the page's ranges. Returns the
        numbers and the notes for the captions (masks of another size, resized)."""
        d = self.defaults
        low, high = d.size_range()
        ranges = {
            "lambda": (0.0, None, False),
            "seed": (0, None, True),
            "guidance": (None, None, False),
            "steps": (1, None, True),
            "number of images": (1, MAX_IMAGES, True),
            "width": (low, high, True),
            "height": (low, high, True),
        }
        checked = {name: number(numbers[name], name, *ranges[name]) for name in ranges}
        for name, text in (("prompt", prompt), ("negative prompt", negative_prompt)):
            if text is not None and not isinstance(text, str):
                raise EliteError(f"{name}: text, got {text!r}")
        find_placeholders(prompt or "", 2 if image2 else 1, d.allow_bare_s)
        notes = []
        for i, (path, mask_path) in enumerate(((image, mask), (image2, mask2)) if image2 else ((image, mask),)):
            picture = self.concept(path)
            if mask_path:
                load_mask(mask_path, picture)
                notes.append(resize_note(mask_path, picture, f"mask {i + 1}" if image2 else "mask"))
        return checked, [n for n in notes if n]

    def generate(
        self,
        image,
        mask,
        prompt,
        lam,
        seed,
        guidance,
        steps,
        scheduler,
        num_images,
        image2=None,
        mask2=None,
        negative_prompt=None,
        randomize_seed=False,
        width=None,
        height=None,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008 (gradio injects progress through this default)
    ):
        """Generate `num_images` images of the concept in `prompt` (S* marks it); image i uses seed + i, a seed
        drawn at random when `randomize_seed`. With a second concept image the prompt names the two concepts
        S1* and S2*. The inputs come unprocessed (files as gradio's FileData). Yields the gallery after each
        image; each caption says the image's seed (and a resized mask)."""
        if self.model is None:
            raise refused("generate", EliteError(self.load_error or "no model loaded"))
        d = self.defaults
        image, mask, image2, mask2 = map(file_path, (image, mask, image2, mask2))
        try:
            if randomize_seed is True:
                seed = secrets.randbelow(SEED_RANGE)
            values = {"lambda": lam, "seed": seed, "guidance": guidance, "steps": steps}
            values.update({"number of images": num_images, "width": width or d.size, "height": height or d.size})
            n, notes = self.check_request(image, mask, prompt, negative_prompt, image2, mask2, values)
            images = []
            for i, picture in enumerate(
                self.model.each_image(
                    image,
                    mask,
                    prompt,
                    n["lambda"],
                    n["steps"],
                    n["guidance"],
                    n["seed"],
                    scheduler,
                    n["number of images"],
                    progress,
                    image2,
                    mask2,
                    negative_prompt=negative_prompt or None,
                    width=None if n["width"] == d.size else n["width"],  # the model's own size: a plain request
                    height=None if n["height"] == d.size else n["height"],
                )
            ):
                images.append((picture, "; ".join([f"seed {n['seed'] + i}", *notes])))
                yield images
        except EliteError as exc:
            raise refused("generate", exc) from None
        except Exception as exc:  # noqa: BLE001 - our bug: the page gets one line, the log the trace
            log.exception("generation failed (prompt %s)", shown(prompt if isinstance(prompt, str) else ""))
            raise gr.Error(
                one_line(f"generation failed ({type(exc).__name__}: {exc})"), print_exception=False
            ) from None

    # --- the page ------------------------------------------------------------------------------------
    def blocks(self) -> gr.Blocks:
        with gr.Blocks(title="ELITE demo", analytics_enabled=False) as app:
            gr.Markdown(
                "## ELITE: your concept in new scenes\nUpload, drop or paste one image of an object, click on the "
                "object so SAM masks it, write a prompt where **S\\*** stands for it, and generate."
            )
            source = f"Model: `{self.model.source}`" if self.model else f"**No model loaded.** {self.load_error}"
            gr.Markdown(source, elem_id="model-status")
            prompts = gr.State(Prompts())
            with gr.Row():
                with gr.Column(scale=1):
                    left = self._concept_column()
                with gr.Column(scale=1):
                    right = self._prompt_column()
            ui = SimpleNamespace(**vars(left), **vars(right), prompts=prompts)
            if self.examples:
                self._examples(ui)
            self._wire(ui)
        return app

    def _concept_column(self) -> SimpleNamespace:
        """The concept image, the mask tools (clicks, SAM, brush, upload) and the optional second concept."""
        concept = gr.Image(  # image_mode None: the events get the uploaded file itself
            label="1. Concept image: upload, drop or paste (JPEG, PNG, ...)",
            type="filepath",
            image_mode=None,
            sources=["upload", "clipboard"],
            height=240,
            elem_id="concept",
        )
        mode = gr.Radio(list(MODES), value=next(iter(MODES)), label="2. A click on the image adds", elem_id="mode")
        view = gr.Image(
            label="Click on the object (blue = mask)",
            interactive=False,
            format="png",
            type="pil",
            elem_id="view",
            buttons=["fullscreen"],
        )
        with gr.Row():
            auto = gr.Button("SAM: most salient object", size="sm", elem_id="auto")
            whole = gr.Button("Whole image (clear)", size="sm", elem_id="whole")
        status = gr.Markdown(describe(None, ""), elem_id="mask-status")
        mask = gr.File(
            label="Object mask (white = object): made from your clicks, or upload one",
            type="filepath",
            elem_id="mask",
        )
        with gr.Accordion("Touch up the mask with a brush", open=False):
            edit = gr.Button("Open the mask in the editor", size="sm", elem_id="edit")
            painter = gr.ImageEditor(
                type="pil",
                image_mode="RGBA",
                sources=(),
                transforms=(),
                layers=False,
                brush=gr.Brush(colors=[f"rgb{TINT}", f"rgb{ERASE}"], color_mode="fixed"),
                eraser=gr.Eraser(),
                label="Blue brush adds to the mask, black removes",
                elem_id="painter",
                format="png",
            )
            use = gr.Button("Use the painted mask", size="sm", elem_id="use-painted")
        with gr.Accordion("Second concept (optional): the prompt then names them S1* and S2*", open=False):
            concept2 = gr.File(label="Second concept image", type="filepath", elem_id="concept2")
            mask2 = gr.File(label="Its mask (white = object; none: the whole image)", type="filepath", elem_id="mask2")
        return SimpleNamespace(
            concept=concept,
            mode=mode,
            view=view,
            auto=auto,
            whole=whole,
            status=status,
            mask=mask,
            edit=edit,
            painter=painter,
            use=use,
            concept2=concept2,
            mask2=mask2,
        )

    def _prompt_column(self) -> SimpleNamespace:
        """Prompt, lambda, the sampler settings and the results."""
        d = self.defaults
        prompt = gr.Textbox(label="3. Prompt (S* = your concept)", value="a photo of a S*", elem_id="prompt")
        negative = gr.Textbox(
            label="Negative prompt: what the images should not show (optional)",
            placeholder="e.g. blurry, low quality",
            elem_id="negative",
        )
        preset = gr.Radio(list(LAMS), label="lambda preset (paper)", elem_id="preset")
        lam = gr.Slider(
            0.0,
            1.5,
            value=d.lam,
            step=0.05,
            elem_id="lam",
            label="lambda: weight of the local (detail) branch; 0.8 plain, 0.6 editing prompts",
        )
        with gr.Accordion("Sampler: seed, steps, guidance, size", open=False):
            with gr.Row():
                seed = gr.Number(value=d.seed, precision=0, label="seed (image i uses seed + i)", elem_id="seed")
                randomize = gr.Checkbox(
                    label="randomize seed (the seed used is under each image)", elem_id="randomize"
                )
            guidance = gr.Slider(1.0, 15.0, value=d.guidance, step=0.5, label="guidance scale", elem_id="guidance")
            steps = gr.Slider(1, 150, value=d.steps, step=1, label="steps", elem_id="steps")
            low, high = d.size_range()
            with gr.Row():
                width, height = (
                    gr.Slider(low, high, value=d.size, step=d.size_step, label=side, elem_id=side)
                    for side in ("width", "height")
                )
            scheduler = gr.Dropdown(list(SCHEDULERS), value=d.scheduler, label="scheduler")
        num = gr.Slider(1, MAX_IMAGES, value=1, step=1, label="number of images", elem_id="num")
        with gr.Row():
            go = gr.Button("Generate", variant="primary", elem_id="generate", scale=3)
            stop = gr.Button("Cancel", variant="stop", elem_id="cancel", scale=1)
        gallery = gr.Gallery(
            label="Results (caption: the seed of each image)",
            format="png",
            columns=2,
            elem_id="gallery",
            height=480,
        )
        return SimpleNamespace(
            prompt=prompt,
            negative=negative,
            preset=preset,
            lam=lam,
            seed=seed,
            randomize=randomize,
            guidance=guidance,
            steps=steps,
            width=width,
            height=height,
            scheduler=scheduler,
            num=num,
            go=go,
            stop=stop,
            gallery=gallery,
        )

    def _examples(self, ui: SimpleNamespace) -> None:
        hidden = {"api_visibility": "undocumented"}
        gr.Examples(
            [e.row() for e in self.examples],
            inputs=[ui.concept, ui.mask, ui.prompt, ui.lam],
            fn=self.on_example,
            outputs=[ui.view, ui.prompts, ui.status],
            run_on_click=True,
            label="Examples (click one: image, mask, prompt and lambda)",
            elem_id="examples",
            cache_examples=False,
            examples_per_page=12,
            **hidden,
        )

    def _wire(self, ui: SimpleNamespace) -> None:
        """The events: mask tools on one SAM queue, generation on its own, cancel."""
        d = self.defaults
        hidden = {"api_visibility": "undocumented"}
        sam = {"concurrency_id": "sam", "concurrency_limit": 1, **hidden}
        # upload, drop and paste: the file goes to our decoder unprocessed (gradio's preprocessing opens it with
        # PIL and answers a non-image with a generic error); a refused file is cleared from the box
        for event in (ui.concept.upload, ui.concept.clear):
            event(
                self.on_concept,
                ui.concept,
                [ui.concept, ui.view, ui.mask, ui.prompts, ui.status],
                preprocess=False,
                **hidden,
            )
        ui.view.select(
            self.on_click, [ui.concept, ui.prompts, ui.mode], [ui.view, ui.mask, ui.prompts, ui.status], **sam
        )
        ui.auto.click(self.on_auto, ui.concept, [ui.view, ui.mask, ui.prompts, ui.status], **sam)
        ui.whole.click(self.on_whole, ui.concept, [ui.view, ui.mask, ui.prompts, ui.status], **hidden)
        ui.mask.upload(self.on_mask_upload, [ui.concept, ui.mask], [ui.view, ui.mask, ui.prompts, ui.status], **hidden)
        ui.mask.clear(self.on_whole, ui.concept, [ui.view, ui.mask, ui.prompts, ui.status], **hidden)
        ui.edit.click(self.on_edit, [ui.concept, ui.mask], ui.painter, **hidden)
        ui.use.click(
            self.on_painted, [ui.concept, ui.mask, ui.painter], [ui.view, ui.mask, ui.prompts, ui.status], **hidden
        )
        ui.preset.change(lambda p: LAMS.get(p, d.lam), ui.preset, ui.lam, **hidden)
        run = ui.go.click(
            self.generate,
            [
                ui.concept,
                ui.mask,
                ui.prompt,
                ui.lam,
                ui.seed,
                ui.guidance,
                ui.steps,
                ui.scheduler,
                ui.num,
                ui.concept2,
                ui.mask2,
            ]
            + [ui.negative, ui.randomize, ui.width, ui.height],
            ui.gallery,
            api_name="generate",
            concurrency_id="generate",
            concurrency_limit=1,
            show_progress="full",
            preprocess=False,  # every input checked here (`check_request`), with one-line messages
        )
        ui.stop.click(None, None, None, cancels=[run], **hidden)


def launch(
    demo: Demo, host: str, port: int | None, prevent_thread_lock: bool = False, auth: list | None = None
) -> gr.Blocks:
    """Serve the page (port None: the first free one from 7860); returns the Blocks (`.local_url`, `.close()`).
    `auth`: (user, password) pairs; the page and its API then ask for one (gradio's login page)."""
    app = demo.blocks()
    app.queue(default_concurrency_limit=1, max_size=64)
    app.launch(
        server_name=host,
        server_port=port,
        ssr_mode=False,
        max_file_size=MAX_FILE_SIZE,
        show_error=False,
        prevent_thread_lock=prevent_thread_lock,
        auth=auth,
        auth_message="ELITE demo: log in with a user and password the operator gave you" if auth else None,
        allowed_paths=[str(demo.tmp)],
        footer_links=["api"],
        app_kwargs={"exception_handlers": {ClientDisconnect: client_gone}},
    )
    return app

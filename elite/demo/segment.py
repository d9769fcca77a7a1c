"""The demo's object masks: SAM from clicks (object / background points) or a box, SAM's automatic rule, and
the overlay that shows the mask on the concept image.

One SamPredictor serves every session: its image embedding is kept for the last image it was given (a
second click on the same image costs only the prompt decoder), and one lock (shared with
`elite.automask`) keeps two sessions from mixing their images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from elite import automask
from elite.errors import EliteError

DISPLAY_SIDE = 1024  # the clickable view is at most this many pixels on its longer side ...
MIN_DISPLAY_SIDE = 384  # ... and small images are enlarged to about this, to be easy to click
OBJECT, BACKGROUND = 1, 0  # SAM point labels
TINT = (30, 144, 255)  # the mask's colour in the view


@dataclass
class Prompts:
    """A session's SAM prompts in image pixels: points (x, y, label) and a box made of two corner clicks."""

    points: list[tuple[int, int, int]] = field(default_factory=list)
    corner: tuple[int, int] | None = None  # the first corner of a box being drawn
    box: tuple[int, int, int, int] | None = None

    def empty(self) -> bool:
        return not self.points and self.box is None

    def add_corner(self, x: int, y: int) -> None:
        if self.corner is None:
            self.corner, self.box = (x, y), None
            return
        (x0, y0), self.corner = self.corner, None
        self.box = (min(x0, x), min(y0, y), max(x0, x), max(y0, y))


class Segmenter:
    def __init__(self, sam_dir: str | Path, cfg):
        """`cfg`: the params `mask` section (device, multimask, and the automatic rule's settings)."""
        self.sam_dir, self.cfg = Path(sam_dir), cfg
        self.masker = automask.box_masker(str(self.sam_dir.resolve()), cfg.device, cfg.multimask)
        self.current: str | None = None  # key of the image whose embedding the predictor holds

    @torch.inference_mode()
    def from_prompts(self, image: Image.Image, key: str, prompts: Prompts) -> np.ndarray:
        """SAM's mask (H, W) bool for the clicks and/or box; the best of SAM's candidates for a single click."""
        if prompts.empty():
            raise EliteError("no click yet: click on the object (or two corners of a box)")
        coords = np.array([p[:2] for p in prompts.points], np.float32) if prompts.points else None
        labels = np.array([p[2] for p in prompts.points], np.int64) if prompts.points else None
        box = np.array(prompts.box, np.float32) if prompts.box else None
        multimask = len(prompts.points) == 1 and box is None  # SAM's advice: one click is ambiguous
        with automask._lock:
            predictor = self.masker.predictor
            if self.current != key:
                predictor.set_image(np.asarray(image.convert("RGB")))
                self.current = key
            masks, scores, _ = predictor.predict(
                point_coords=coords, point_labels=labels, box=box, multimask_output=multimask
            )
        return masks[int(np.argmax(scores))]

    def auto(self, image: Image.Image) -> np.ndarray:
        """The most salient object (elite.automask's rule, the same as `elite generate --mask auto`)."""
        self.current = None  # the automatic rule gives the predictor other inputs
        return np.asarray(automask.auto_mask(image, self.sam_dir, self.cfg)) > 0


def display_scale(size: tuple[int, int]) -> float:
    """View pixels per image pixel."""
    return min(DISPLAY_SIDE / max(size), max(1.0, MIN_DISPLAY_SIDE // max(size)))


def to_image_pixels(index, size: tuple[int, int]) -> tuple[int, int]:
    """A click on the view (its pixel coordinates) in image pixels; an EliteError when it is outside."""
    if not isinstance(index, (list, tuple)) or len(index) != 2:
        raise EliteError("the click did not land on the image; click on the object in the image")
    scale = display_scale(size)
    x, y = (int(v / scale) for v in index)
    if not (0 <= x < size[0] and 0 <= y < size[1]):
        raise EliteError(f"the click ({x}, {y}) is outside the image ({size[0]}x{size[1]}); click on the object")
    return x, y


def overlay(image: Image.Image, mask: np.ndarray | None, prompts: Prompts | None = None) -> Image.Image:
    """The view: the image (scaled, see display_scale) with the object tinted blue and outlined white, object clicks
    green, background clicks red, the box (or its first corner) yellow."""
    scale = display_scale(image.size)
    view = image.convert("RGB")
    if scale != 1:
        view = view.resize(
            (round(image.width * scale), round(image.height * scale)), Image.BILINEAR if scale < 1 else Image.NEAREST
        )
    if mask is not None:
        m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(view.size, Image.NEAREST)) > 0
        rgb = np.asarray(view).astype(np.float32)
        rgb[m] = 0.5 * rgb[m] + 0.5 * np.array(TINT, np.float32)
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        rgb[edge] = (255, 255, 255)
        view = Image.fromarray(rgb.round().astype(np.uint8))
    if prompts is not None:
        draw = ImageDraw.Draw(view)
        r = max(3, round(max(view.size) / 120))
        for x, y, label in prompts.points:
            cx, cy = x * scale, y * scale
            draw.ellipse(
                (cx - r, cy - r, cx + r, cy + r),
                fill=(40, 220, 60) if label == OBJECT else (230, 30, 30),
                outline=(255, 255, 255),
            )
        if prompts.box is not None:
            draw.rectangle([v * scale for v in prompts.box], outline=(255, 220, 0), width=max(2, r // 2))
        if prompts.corner is not None:
            cx, cy = prompts.corner[0] * scale, prompts.corner[1] * scale
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), outline=(255, 220, 0), width=2)
    return view


ERASE = (0, 0, 0)  # the brush colour that removes from the mask (TINT adds)


def paint_view(image: Image.Image, mask: np.ndarray | None) -> dict:
    """The brush editor's value: the view of the image with its mask; the user paints on a layer of its own."""
    return {"background": overlay(image, mask), "layers": [], "composite": None}


def painted_mask(value: dict | None, mask: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    """`mask` (None: empty) with the strokes of the brush editor applied: TINT strokes add to it, ERASE strokes
    remove from it (strokes are view-sized; the result is image-sized, bool)."""
    layers = [np.asarray(layer.convert("RGBA")) for layer in (value or {}).get("layers") or [] if layer is not None]
    if not layers:
        raise EliteError("nothing painted: open the mask in the editor and paint on the image first")
    out = np.zeros((size[1], size[0]), bool) if mask is None else mask.copy()
    for layer in layers:
        for colour, keep in ((TINT, True), (ERASE, False)):
            # opaque pixels only: a stroke's soft edge may store darkened colours that would read as ERASE
            near = (np.abs(layer[..., :3].astype(np.int16) - np.array(colour)).max(axis=2) < 48) & (
                layer[..., 3] >= 128
            )
            stroke = np.asarray(Image.fromarray(near.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
            out[stroke] = keep
    return out

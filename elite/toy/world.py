"""The toy world: a seeded, deterministic renderer of small scenes with exact labels, boxes and masks.

A scene is a textured background (the *scene*: grass, sand, snow, water, night sky, brick wall) with one
or two objects. Each object has a *class* (its shape word: ball, box, star, heart) and an *identity*
(a colour from 8 and a surface pattern from 4: plain, striped, checkered, dotted); size, position and rotation
are nuisance. Shapes are drawn 4x supersampled and area-averaged, with a dark outline, so edges are
smooth at 32 px while the mask (object share of a pixel >= 0.5) stays exact.

Everything is a pure function of its arguments: `render(spec, size)` draws a `SceneSpec`; `sample_spec`
draws a spec from a numpy Generator. Labels never come from a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CLASSES = ("ball", "box", "star", "heart")
COLOURS = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 40),
    "green": (40, 190, 60),
    "cyan": (40, 220, 230),
    "blue": (40, 70, 230),
    "purple": (150, 50, 200),
    "white": (245, 245, 245),
}
PATTERNS = ("plain", "striped", "checkered", "dotted")
SCENES = ("grass", "sand", "snow", "water", "night sky", "brick wall")
SUPER = 4  # supersampling factor of the object coverage
# Pattern period in object units (the object spans [-1, 1]): a stripe is 0.3 units, 3-4 px for the single-object
# radius of 0.30-0.40 of a 32 px side, so every stripe covers at least one 2x2 latent cell.
PATTERN_PERIOD = 0.6
# The pattern's second colour, the same for every object colour: a pattern is the same dark shapes on any colour, so
# colour and pattern are separate attributes of the image (a colour-tinted dark made "red striped" a colour of
# its own).
PATTERN_INK = (40, 40, 48)


@dataclass(frozen=True)
class ObjectSpec:
    cls: str
    colour: str
    pattern: str
    cx: float  # centre, fraction of the side
    cy: float
    radius: float  # half the object's extent, fraction of the side
    angle: float  # radians
    phase: float = 0.0  # pattern offset, fraction of a period

    @property
    def identity(self) -> tuple[str, str]:
        return self.colour, self.pattern


@dataclass(frozen=True)
class SceneSpec:
    scene: str
    objects: tuple[ObjectSpec, ...]
    texture_seed: int = 0


@dataclass
class Render:
    image: np.ndarray  # (H, W, 3) uint8
    masks: list[np.ndarray] = field(default_factory=list)  # per object, visible pixels, bool (H, W)
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # x0, y0, x1, y1 (end exclusive)


def _shape(cls: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in object coordinates (u, v in [-1, 1] span the object's extent; v points down)."""
    if cls == "ball":
        return u**2 + v**2 <= 1.0
    if cls == "box":
        return (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
    if cls == "star":
        r, t = np.hypot(u, v), np.arctan2(u, -v)
        k = np.cos(np.pi / 5) / np.cos((t % (2 * np.pi / 5)) - np.pi / 5)  # 0..1 along a 5-point star edge
        return r <= 0.55 + 0.45 * np.clip((k - np.cos(np.pi / 5)) / (1 - np.cos(np.pi / 5)), 0, 1) ** 1.6
    if cls == "heart":
        x, y = u * 1.15, -(v * 1.15) + 0.25
        return (x**2 + y**2 - 0.55) ** 3 - x**2 * y**3 * 0.9 <= 0
    raise ValueError(f"unknown class {cls!r}")


def _pattern(pattern: str, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """1 where the object's own colour shows, 0 where the pattern's ink does."""
    if pattern == "plain":
        return np.ones_like(u)
    if pattern == "striped":
        return (np.floor(v / PATTERN_PERIOD + phase) % 2 == 0).astype(np.float32)
    if pattern == "checkered":
        return ((np.floor(u / PATTERN_PERIOD + phase) + np.floor(v / PATTERN_PERIOD + phase)) % 2 == 0).astype(
            np.float32
        )
    if pattern == "dotted":  # ink dots of a third of a period in radius on the same grid
        du = (u / PATTERN_PERIOD + phase) % 1 - 0.5
        dv = (v / PATTERN_PERIOD + phase) % 1 - 0.5
        return (du**2 + dv**2 > (1 / 3) ** 2).astype(np.float32)
    raise ValueError(f"unknown pattern {pattern!r}")


def _background(scene: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    noise = rng.normal(0, 1, (size, size)).astype(np.float32)
    img = np.zeros((size, size, 3), np.float32)
    if scene == "grass":
        img[:] = (60, 140, 50)
        img += (noise * 6)[..., None] * np.array([0.5, 1.0, 0.4])
        img[(np.sin(xx * 40 + 2 * np.sin(yy * 7)) > 0.6)] *= 0.8
    elif scene == "sand":
        img[:] = (215, 190, 140)
        img += (noise * 4)[..., None]
        img += (np.sin((xx + 0.3 * yy) * 18) * 8)[..., None]
    elif scene == "snow":
        img[:] = (225, 232, 245)
        img += (noise * 2)[..., None]
        img -= (yy * 30)[..., None] * np.array([0.6, 0.4, 0.0])
    elif scene == "water":
        img[:] = (30, 100, 170)
        img += (np.sin(yy * 40 + np.sin(xx * 9) * 2) * 18)[..., None] * np.array([0.3, 0.6, 1.0])
        img += (noise * 3)[..., None]
    elif scene == "night sky":
        img[:] = (12, 14, 45)
        img += (yy * 25)[..., None] * np.array([0.3, 0.2, 0.8])
        img[rng.random((size, size)) > 0.985] = (250, 250, 220)
    elif scene == "brick wall":
        img[:] = (160, 70, 45)
        row = np.floor(yy * 6)
        mortar = (np.abs((yy * 6) % 1 - 0.0) < 0.12) | (np.abs((xx * 4 + 0.5 * (row % 2)) % 1) < 0.08)
        img[mortar] = (200, 195, 185)
        img += (noise * 3)[..., None]
    else:
        raise ValueError(f"unknown scene {scene!r}")
    return img


def _coverage(obj: ObjectSpec, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Supersampled (fill, outline, pattern) coverage in [0, 1], each (size, size)."""
    n = size * SUPER
    yy, xx = (np.mgrid[:n, :n].astype(np.float32) + 0.5) / n
    r = obj.radius
    dx, dy = (xx - obj.cx) / r, (yy - obj.cy) / r
    c, s = np.cos(obj.angle), np.sin(obj.angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    outline_w = 1.6 / (size * r)  # about 1.6 px of outline at any size
    inner = _shape(obj.cls, u * (1 + outline_w), v * (1 + outline_w))
    outer = _shape(obj.cls, u, v)
    pat = _pattern(obj.pattern, u, v, obj.phase)

    def pool(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32).reshape(size, SUPER, size, SUPER).mean(axis=(1, 3))

    return pool(outer), pool(inner), pool(inner * pat)


def render(spec: SceneSpec, size: int) -> Render:
    rng = np.random.default_rng(spec.texture_seed)
    img = _background(spec.scene, size, rng)
    masks: list[np.ndarray] = []
    for obj in spec.objects:
        outer, inner, lit = _coverage(obj, size)
        colour = np.array(COLOURS[obj.colour], np.float32)
        fill = lit[..., None] * colour + (inner - lit)[..., None] * np.array(PATTERN_INK, np.float32)
        img = img * (1 - outer[..., None]) + fill + (outer - inner)[..., None] * np.array([20, 20, 20], np.float32)
        m = outer >= 0.5
        masks = [prev & ~m for prev in masks] + [m]
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (0, 0, 0, 0))
    return Render(image, masks, boxes)


def sample_object(
    rng: np.random.Generator,
    cls: str | None = None,
    identity: tuple[str, str] | None = None,
    radius: tuple[float, float] = (0.30, 0.40),
    centre: tuple[float, float] = (0.40, 0.60),
) -> ObjectSpec:
    colour, pattern = identity or (str(rng.choice(list(COLOURS))), str(rng.choice(PATTERNS)))
    return ObjectSpec(
        cls=cls or str(rng.choice(CLASSES)),
        colour=colour,
        pattern=pattern,
        cx=float(rng.uniform(*centre)),
        cy=float(rng.uniform(*centre)),
        radius=float(rng.uniform(*radius)),
        angle=float(rng.uniform(-0.5, 0.5)),
        phase=float(rng.uniform(0, 2)),
    )


def sample_spec(rng: np.random.Generator, scene: str | None = None, objects: int = 1, **obj_kw) -> SceneSpec:
    """One scene: `objects` == 2 places two smaller objects side by side (left and right half)."""
    scene = scene or str(rng.choice(SCENES))
    if objects == 1:
        objs = (sample_object(rng, **obj_kw),)
    else:
        objs = tuple(
            sample_object(rng, radius=(0.18, 0.22), centre=(0.27 + 0.46 * k - 0.04, 0.27 + 0.46 * k + 0.04), **obj_kw)
            for k in range(objects)
        )
        objs = tuple(
            ObjectSpec(o.cls, o.colour, o.pattern, o.cx, float(rng.uniform(0.35, 0.65)), o.radius, o.angle, o.phase)
            for o in objs
        )
    return SceneSpec(scene, objs, int(rng.integers(2**31)))


def identities() -> list[tuple[str, str]]:
    return [(c, p) for c in COLOURS for p in PATTERNS]

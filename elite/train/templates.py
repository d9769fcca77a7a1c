"""Training captions: the 27 templates of Textual Inversion that ELITE trains with (paper supplement B.3)."""

from __future__ import annotations

from elite.placeholders import PLACEHOLDER

TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)


def caption(template_index: int, prefix: str | None = None) -> str:
    """The caption with S* in place; a stage-2 scale prefix ("a far away", "zoomed in", ...) replaces the
    template's leading article "a" (as the authors do: "a far away photo of a S*"), or goes in front of
    a template that starts otherwise ("very small the photo of a S*")."""
    text = TEMPLATES[template_index].format(PLACEHOLDER)
    if not prefix:
        return text
    if text.startswith("a "):
        return f"{prefix} {text[2:]}"
    return f"{prefix} {text}"

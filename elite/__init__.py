"""ELITE: encode a visual concept into textual embeddings for Stable Diffusion."""

from __future__ import annotations

__all__ = ["ElitePipeline", "Concept", "EliteModel"]


def __getattr__(name: str):
    # lazy: `import elite` stays cheap for the CLI and the config code
    if name in ("ElitePipeline", "Concept"):
        from elite import pipeline

        return getattr(pipeline, name)
    if name == "EliteModel":
        from elite.models.elite_model import EliteModel

        return EliteModel
    raise AttributeError(name)

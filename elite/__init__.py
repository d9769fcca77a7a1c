"""ELITE: encode a visual concept into textual embeddings for Stable Diffusion."""

from __future__ import annotations

__all__ = [
    "ElitePipeline",
    "Concept",
    "EliteModel",
    "EliteStableDiffusionPipeline",
    "EliteStableDiffusionImg2ImgPipeline",
    "EliteStableDiffusionInpaintPipeline",
    "EliteStableDiffusionControlNetPipeline",
]


def __getattr__(name: str):
    # lazy: `import elite` stays cheap for the CLI and the config code
    if name in ("ElitePipeline", "Concept"):
        from elite import pipeline

        return getattr(pipeline, name)
    if name == "EliteModel":
        from elite.models.elite_model import EliteModel

        return EliteModel
    if name == "EliteStableDiffusionPipeline":
        from elite.loader import EliteStableDiffusionPipeline

        return EliteStableDiffusionPipeline
    if name in __all__[4:]:  # img2img, inpainting, ControlNet
        from elite import pipelines

        return getattr(pipelines, name)
    raise AttributeError(name)

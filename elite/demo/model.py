"""The demo's generator: the registered ELITE pyfunc (`models:/elite-<profile>@champion` by default, any alias or
version), or a weights folder wrapped in the same `ElitePyfunc`. Either way a generation is one request
row per image through `ElitePyfunc.predict`, the code `mlflow models serve` runs, so the demo answers what
a served model (and, for the same seed and settings, `elite generate`) answers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from elite.errors import EliteError
from elite.registry.codec import decode_png, encode_concepts, encode_file
from elite.registry.pyfunc import WEIGHTS, ElitePyfunc, serving_defaults


@dataclass
class Defaults:
    lam: float
    steps: int
    guidance: float
    seed: int
    scheduler: str
    allow_bare_s: bool
    size: int = 512  # the model's output side (pixels), the page's default width and height
    size_step: int = 8  # width and height are multiples of this (the VAE's scale factor)

    def size_range(self) -> tuple[int, int]:
        """The page's width/height limits: half to one and a half times the model's size, in whole steps."""
        return max(self.size_step, self.size // 2 // self.size_step * self.size_step), (
            self.size * 3 // 2 // self.size_step * self.size_step
        )


def registry_uri(name: str, alias: str | None, version: int | None) -> str:
    return f"models:/{name}/{version}" if version is not None else f"models:/{name}@{alias or 'champion'}"


def how_to_register(uri: str) -> str:
    return (
        f"{uri}: not in the MLflow registry at {_store()}. Make one with `make run` (its register stage registers "
        "the trained model and gives it the champion alias when the gates pass) or `elite register`; or start "
        "the demo on another one: `elite demo --alias NAME`, `--version N` or `--weights DIR`"
    )


def _store() -> str:
    from elite.tracking import redact, tracking_uri

    return redact(tracking_uri())


class DemoModel:
    def __init__(self, predict, config: dict, source: str):
        self._predict = predict  # (DataFrame, params) -> DataFrame with one base64 PNG per row
        self.source = source
        self.defaults = Defaults(
            lam=float(config["lam"]),
            steps=int(config["steps"]),
            guidance=float(config["guidance"]),
            seed=int(config["seed"]),
            scheduler=str(config["scheduler"]),
            allow_bare_s=bool(config.get("allow_bare_s", False)),
        )
        self.pipe = None  # the loaded ElitePipeline, for progress bars and its output size

    def attach(self, pipe) -> DemoModel:
        """The loaded pipeline: its output size becomes the page's default width and height."""
        self.pipe = pipe
        self.defaults.size_step = int(pipe.vae_scale_factor)
        self.defaults.size = int(pipe.unet.config.sample_size) * self.defaults.size_step
        return self

    @classmethod
    def from_registry(cls, uri: str) -> DemoModel:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow
        from mlflow.exceptions import MlflowException

        from elite.tracking import check_tracking_server, require_store, tracking_uri

        uri_store = require_store(uri) if uri.startswith(("models:", "runs:")) else tracking_uri()
        check_tracking_server(uri_store)
        mlflow.set_tracking_uri(uri_store)
        try:
            loaded = mlflow.pyfunc.load_model(uri)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in exc.message.lower():
                raise EliteError(how_to_register(uri)) from None
            raise EliteError(
                f"{uri}: cannot load it from the registry ({exc.message.splitlines()[0][:300]})"
            ) from None
        return cls(loaded.predict, loaded.model_config, uri).attach(loaded.unwrap_python_model().pipe)

    @classmethod
    def from_weights(cls, weights: str | Path, base: str | Path, params) -> DemoModel:
        """A weights folder (+ base model) in the registered model's code; serving defaults from params.yaml, as
        the register stage would store them."""
        from mlflow.pyfunc import PythonModelContext

        weights = Path(weights)
        if not weights.is_dir():
            raise EliteError(
                f"{weights}: weights folder not found (--weights); train one (`make run`) or use the registry"
            )
        config = {"base": str(base), **serving_defaults(params.generate, params.register.cuda_dtype)}
        pyfunc = ElitePyfunc()
        pyfunc.load_context(PythonModelContext(artifacts={WEIGHTS: str(weights)}, model_config=config))
        return cls(lambda frame, p: pyfunc.predict(None, frame, p), config, str(weights)).attach(pyfunc.pipe)

    def generate(self, *args, **kwargs) -> list[Image.Image]:
        """All the images of `each_image` (same arguments) at once."""
        return list(self.each_image(*args, **kwargs))

    def each_image(
        self,
        image: str | Path,
        mask: str | Path | None,
        prompt: str,
        lam: float,
        steps: int,
        guidance: float,
        seed: int,
        scheduler: str,
        num_images: int,
        progress=None,
        image2: str | Path | None = None,
        mask2: str | Path | None = None,
        negative_prompt: str | None = None,
        width: int | None = None,
        height: int | None = None,
    ):
        """Yield `num_images` images, one at a time; image i uses seed + i (so `elite generate --seed S+i`
        reproduces each one). With `image2` a second concept (the prompt names them S1* and S2*; a version-2
        request row). `negative_prompt`, `width` and `height` go into the row only when given (a model
        registered before these columns existed answers requests without them).
        Bad input raises EliteError (the pyfunc's message, without its row number)."""
        from mlflow.exceptions import MlflowException

        row = {
            "image": encode_file(image),
            "prompt": prompt,
            "lam": float(lam),
            "steps": int(steps),
            "guidance": float(guidance),
        }
        if mask is not None:
            row["mask"] = encode_file(mask)
        if image2 is not None:
            row = {k: v for k, v in row.items() if k not in ("image", "mask")}
            row.update(version=2, concepts=encode_concepts([[(image, mask)], [(image2, mask2)]]))
        optional = {"negative_prompt": negative_prompt or None, "width": width, "height": height}
        row.update({k: v for k, v in optional.items() if v is not None})
        for i in range(num_images):
            if progress is not None:
                desc = f"image {i + 1} of {num_images}"
                progress((i, num_images), desc=desc)
                if self.pipe is not None:  # the sampler's bar, which the page follows, names the image too
                    self.pipe.set_progress_bar_config(disable=False, leave=False, desc=f"{desc}: sampling")
            try:
                out = self._predict(pd.DataFrame([{**row, "seed": int(seed) + i}]), {"scheduler": scheduler})
            except MlflowException as exc:
                raise EliteError(
                    exc.message.split(": ", 1)[-1] if exc.message.startswith("row ") else exc.message
                ) from None
            yield decode_png(out["image"][0])

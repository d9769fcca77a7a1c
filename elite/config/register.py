"""params.yaml section `register` (the register stage: MLflow pyfunc model, registry aliases, gates)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from elite.config.base import Section


class Gate(Section):
    metric: str = Field(min_length=1)  # dotted path into metrics (e.g. overall.clip_t): a number
    higher_is_better: bool
    tolerance: float = Field(ge=0)  # the new value may be worse than the champion's by at most this much
    limit: float | None  # absolute bound the value must reach (>= if higher_is_better, else <=); null = none


class RegisterConfig(Section):
    # registered model name in the MLflow Model Registry: one per profile (elite-toy, elite-smoke, elite-paper),
    # so a gate only ever compares a model with the champion of its own profile
    model_name: str = Field(min_length=1)
    weights: str  # ELITE weights folder to register (the image encoder it names is packaged with it)
    base: str  # Stable Diffusion folder the weights were trained on
    copy_base: bool  # true: put a copy of `base` into the model; false: store only a reference to it
    base_reference: (
        str | None
    )  # with copy_base false: path or hub id stored in the model (null = absolute path of base)
    metrics: str  # DreamBench metrics JSON (the evaluate stage's output)
    report: str  # where the decision is written (version, aliases, decision, reason)
    candidate_alias: str = Field(min_length=1)  # every new version gets it
    champion_alias: str = Field(min_length=1)  # moves only when every gate passes
    gates: list[Gate]
    # the profile's fixed floor: a gate metric -> its committed reference value. A new version must reach it
    # within floor_tolerance, whatever the champion is, so a drift of small regressions cannot walk it down
    floor: dict[str, float]
    floor_tolerance: float = Field(ge=0)
    verify: bool  # load the logged model back from the store and run the input example before registering
    # the serving defaults baked into the model (lam, steps, guidance, seed, scheduler) are params.yaml `generate`
    cuda_dtype: Literal["float16", "float32"]  # weights dtype when the model is loaded on a GPU (CPU: float32)
    # the input example stored with the model (and run by `verify`)
    example_prompt: str
    example_steps: int = Field(ge=1)

    @model_validator(mode="after")
    def _floor_names_gates(self) -> RegisterConfig:
        gated = {g.metric for g in self.gates}
        for metric in self.floor:
            if metric not in gated:
                raise ValueError(
                    f"floor names {metric!r}, which no gate checks (gates: {', '.join(sorted(gated)) or 'none'})"
                )
        return self

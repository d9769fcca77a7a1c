"""Benchmarks of issue 8: `make bench` (= `python bench/run.py`) -> bench/results.json + a table.

- `settings`: what is measured and how often (full run and the `--quick` run of the tests).
- `measure`: interleaved A/B timing with medians, peak RSS per timed call, the machine record.
- `models`: the smoke models and the SD-v1 / ViT-L/14-sized models with random weights.
- `classic`: the authors' style of attention (no SDPA, heads folded into the batch) for the step figure.
- `figures_infer`: concept encoding, generation vs StableDiffusionPipeline, sampling step.
- `figures_train`: Textual-Inversion-style optimisation, stage-1 training step, SAM masking.
- `figures_device`: both training stages' step memory per option on the training device (`--device cuda`).
- `figures_dvc`: `dvc repro` of the smoke pipeline in a temporary copy (opt-in, `--dvc`).
"""

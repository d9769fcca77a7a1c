"""make bench: the --quick run writes a complete results file, its sanity checks hold, helpers behave."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

FIGURES = ("encode", "generation", "step", "textual_inversion", "training", "memory", "device_memory", "sam", "dvc")


def test_quick_run_writes_every_figure(quick_run):
    code, output, results, _ = quick_run
    assert code == 0, output[-3000:]
    assert results is not None, output[-3000:]
    assert results["schema"] == 1 and results["mode"] == "quick"
    m = results["machine"]
    for key in ("cores", "cpu_model", "torch", "date", "torch_threads", "rss_method", "load_average_at_end"):
        assert m.get(key) not in (None, ""), key
    assert m["torch_threads"] == 1
    assert set(results["figures"]) == set(FIGURES)
    for name, fig in results["figures"].items():
        assert fig["status"] in ("measured", "not measured"), (name, fig.get("reason"))
        assert fig["title"] and fig["target"], name
        if fig["status"] != "measured":
            assert fig["reason"], name
            continue
        assert fig["how"] and fig["headline"], name
        for h in fig["headline"]:
            assert isinstance(h["value"], (int, float)) and math.isfinite(h["value"]), (name, h)
            assert h["value"] >= 0 if h["unit"] == "MiB" else h["value"] > 0, (name, h)  # MiB: growth of the peak RSS
            assert h["wall"] is None or h["wall"] > 0, (name, h)
            assert h["met"] in (True, False, None)
    for name in ("encode", "generation", "step", "textual_inversion", "sam"):
        assert results["figures"][name]["status"] == "measured", name
    # the table is printed with every figure
    for fig in results["figures"].values():
        assert fig["title"][:40] in output


def test_quick_run_timings_and_memory_are_recorded(quick_run):
    results = quick_run[2]
    gen = results["figures"]["generation"]["sizes"]["smoke"]
    for cfg in ("sd", "elite_lam0", "elite_lam"):
        s = gen[cfg]
        assert s["n"] == results["settings"]["gen_rounds"]["smoke"] and len(s["wall_s"]) == s["n"]
        assert 0 < s["min_s"] <= s["median_s"] and s["median_cpu_s"] > 0
        assert s["peak_rss_mib"] > 100  # torch alone is more than that
    assert gen["image_size"] == [gen["resolution"]] * 2
    r = gen["ratio_lam0_vs_sd"]
    assert len(r["per_round_cpu"]) == len(r["per_round_wall"]) == gen["rounds"] and r["cpu"] > 0 and r["wall"] > 0
    enc = results["figures"]["encode"]["sizes"]["smoke"]
    assert enc["n"] == results["settings"]["encode_repeats"] and enc["tower"]["patch"] == 14


def test_authors_style_step_gives_the_same_noise(quick_run):
    """The classic (no SDPA, two calls) ELITE step computes what the pipeline's batched step computes."""
    step = quick_run[2]["figures"]["step"]["sizes"]["smoke"]
    assert step["max_abs_noise"] > 0
    assert step["max_abs_diff_ours_vs_authors"] < 1e-4 * max(1.0, step["max_abs_noise"])


def test_ti_rerun_and_sam_masks_are_consistent(quick_run):
    figs = quick_run[2]["figures"]
    ti = figs["textual_inversion"]["sizes"]["smoke"]
    assert ti["rerun_matches_capped_run"] and 1 <= ti["timed_steps"] <= ti["cap"]
    sam = figs["sam"]["sizes"]["tiny"]
    assert min(sam["boxes"]) >= 4 and sam["mask_pixel_agreement"] > 0.99


def test_training_figure_is_measured_or_says_why(quick_run):
    fig = quick_run[2]["figures"]["training"]
    if fig["status"] == "measured":
        s = fig["sizes"]["smoke"]
        assert s["cache"]["images_per_s"] > 0 and s["no_cache"]["images_per_s"] > 0 and s["cache_build_s"] > 0
    else:
        assert "elite.train" in fig["reason"]
    dvc = quick_run[2]["figures"]["dvc"]
    assert dvc["status"] == "not measured" and "--dvc" in dvc["reason"]


def test_device_memory_runs_both_stages_on_the_cpu(quick_run):
    """The device_memory figure's code path on the smoke models (CPU: peak RSS); on a GPU node the same code
    measures CUDA memory at the paper profile's settings (`--device cuda`, bench/results_cuda.json)."""
    from bench.figures_device import OPTIONS

    fig = quick_run[2]["figures"]["device_memory"]
    assert fig["status"] == "measured", fig.get("reason")
    smoke = fig["sizes"]["smoke"]
    assert smoke["device"] == "cpu" and smoke["profile"] == "smoke" and not smoke["bitsandbytes"]
    for stage in ("train_global", "train_local"):
        rows = smoke[stage]["options"]
        cpu_options = {k for k, v in OPTIONS.items() if v[0] == "adamw" and v[2] != "fp16"}
        assert set(rows) == cpu_options, stage
        for row in rows.values():
            assert 0 < row["resident_before_first_step_gib"] <= row["peak_gib"] and row["median_step_s"] > 0
            assert row["trainable_params_m"] > 0 and np.isfinite(row["final_loss"])
    assert len(fig["headline"]) == 2 * len(cpu_options)


def test_cuda_results_file_is_this_code_s(repo_root):
    """bench/results_cuda.json, the GPU node's run (issue 27: does stage 1 at the authors' batch fit 24 GB?),
    names every option of bench/figures_device.py for both stages at the paper profile's settings."""
    from bench.figures_device import OPTIONS
    from elite.config import load_params

    results = json.loads((repo_root / "bench" / "results_cuda.json").read_text())
    assert results["machine"]["cuda_used"] and results["machine"]["gpu"]
    sd = results["figures"]["device_memory"]["sizes"]["sd"]
    paper = load_params(repo_root / "params.yaml", profile="paper")
    assert sd["profile"] == "paper" and sd["bitsandbytes"]
    for stage, cfg in (("train_global", paper.train_global), ("train_local", paper.train_local)):
        assert (sd[stage]["resolution"], sd[stage]["batch_size"]) == (cfg.resolution, cfg.batch_size)
        assert set(sd[stage]["options"]) == set(OPTIONS), stage


def test_device_cuda_without_a_gpu_is_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda runs")
    cmd = [sys.executable, str(REPO / "bench" / "run.py"), "--device", "cuda"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--device cuda: torch sees no CUDA GPU" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_table_of_a_results_file(quick_run):
    out = quick_run[3]
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--table", str(out), "--markdown"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("| figure | size |") and all(ln.startswith("|") for ln in lines)
    assert len(lines) == 2 + sum(
        max(1, len(f["headline"])) if f["status"] == "measured" else 1 for f in quick_run[2]["figures"].values()
    )
    bad = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--only", "encode,nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_plateau_rule():
    from bench.figures_train import plateau_step

    falling = [10.0 - 0.5 * i for i in range(10)]  # improves by far more than 1% per window
    assert plateau_step(falling, window=2, rel=0.01) is None
    flat_after = falling[:6] + [falling[5]] * 6
    # windows (s-4, s-2] and (s-2, s]: at s = 9 both hold only the flat value 7.5
    assert plateau_step(flat_after, window=2, rel=0.01) == 9
    assert plateau_step([1.0] * 3, window=2, rel=0.01) is None  # fewer than two windows


def test_interleaved_rotates_the_order_and_prepares_each_call():
    from bench.measure import interleaved, ratio

    calls = []
    configs = {name: (lambda n=name: calls.append(f"prep-{n}"), lambda n=name: calls.append(n) or n) for name in "abc"}
    samples = interleaved(configs, rounds=3, warmup=1)
    assert calls[:6] == ["prep-a", "a", "prep-b", "b", "prep-c", "c"]  # warm-up
    timed = [c for c in calls[6:] if not c.startswith("prep-")]
    assert timed == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(s.wall) == 3 and s.last == n for n, s in samples.items())
    r = ratio(samples, "a", "b")
    assert len(r["per_round_cpu"]) == 3 and r["cpu"] > 0 and r["wall"] > 0

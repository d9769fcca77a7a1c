"""DVC experiments on the (test-sized) smoke profile, as a user runs them: a baseline `dvc repro` that registers
the champion, then one experiment with `dvc exp run --temp` and one through `--queue` + `dvc queue start`,
each with another train_local learning rate. Both log and register into the repository's MLflow store
(MLFLOW_TRACKING_URI unset: resolved from DVC_ROOT), the register gate compares against the real champion,
their FiftyOne datasets are their own, and `dvc exp show`, `dvc metrics diff` and `dvc plots diff` compare them."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from browser import chrome, screenshot
from PIL import Image
from pipeline_helpers import BIN, copy_checkout, dvc, free_port, git, run, stage_env, stop_process, wait_for

from elite.tracking import KIND, KIND_TAG, PIPELINE_TAG

pytestmark = pytest.mark.slow  # a baseline dvc repro and two experiments: about 10 minutes on 2 shared cores
DOWNLOAD_DATASET = f"elite-openimages-exptest-{os.getpid()}"
EVAL_DATASET = f"elite-dreambench-exptest-{os.getpid()}"

EXPERIMENTS = {"lr-temp": "2e-4", "lr-queued": "5e-5"}  # name -> train_local.smoke.learning_rate


@pytest.fixture(scope="module")
def experiments(pipeline_copy, session_tmp):
    """The baseline run and the two experiments, in a copy with the test-sized smoke params. Its FiftyOne
    datasets get names of their own: FiftyOne attaches to any database service already running on the
    machine (whatever FIFTYONE_DATABASE_DIR says), so another test session may hold the default names."""
    repo = copy_checkout(session_tmp / "exp-repo")
    params = yaml.safe_load((pipeline_copy / "params.yaml").read_text())
    params["download"]["smoke"]["dataset"] = DOWNLOAD_DATASET
    params["evaluate"]["smoke"]["fiftyone_dataset"] = EVAL_DATASET
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = stage_env(repo)
    env.pop("MLFLOW_TRACKING_URI")  # the default store: <repository>/mlflow.db
    start = time.monotonic()
    dvc(repo, env, "repro", timeout=1500)
    # the committed .gitignore files already name every DVC output: the run leaves nothing untracked
    (session_tmp / "exp-baseline-status.txt").write_text(git_status(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline")
    baseline = time.monotonic()
    (temp, lr_temp), (queued, lr_queued) = EXPERIMENTS.items()
    dvc(repo, env, "exp", "run", "--temp", "-n", temp, "-S", f"train_local.smoke.learning_rate={lr_temp}", timeout=900)
    dvc(repo, env, "exp", "run", "--queue", "-n", queued, "-S", f"train_local.smoke.learning_rate={lr_queued}")
    dvc(repo, env, "queue", "start")
    try:
        deadline, status = time.monotonic() + 900, ""
        while time.monotonic() < deadline:
            status = dvc(repo, env, "queue", "status")
            if re.search(rf"{queued}\s.*(Success|Failed)", status):
                break
            time.sleep(5)
        assert re.search(rf"{queued}\s.*Success", status), (
            f"{status}\n{run([str(BIN / 'dvc'), 'queue', 'logs', queued], repo, env).stdout}"
        )
    finally:
        run([str(BIN / "dvc"), "queue", "stop", "--kill"], repo, env)
    print(f"baseline dvc repro {baseline - start:.0f} s, two experiments {time.monotonic() - baseline:.0f} s")
    return repo, env


def git_status(repo: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def _client(repo):
    from mlflow import MlflowClient

    uri = f"sqlite:///{repo / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_experiments_log_and_register_into_the_repository_store(experiments):
    repo, env = experiments
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db")), "an experiment made its own store"
    client = _client(repo)
    runs = client.search_runs([client.get_experiment_by_name("elite").experiment_id], max_results=500)
    by_exp = {
        name: {
            r.data.tags["stage"]: r
            for r in runs
            if r.data.tags.get("dvc.experiment") == name and "stage" in r.data.tags
        }
        for name in EXPERIMENTS
    }  # the stage runs, not the pipeline run
    for name, lr in EXPERIMENTS.items():
        stages = by_exp[name]
        assert set(stages) == {"train_local", "evaluate", "register"}, (name, sorted(stages))
        assert float(stages["train_local"].data.params["train_local.learning_rate"]) == float(lr)
        # the experiment's own FiftyOne dataset (the workspace's keeps its name and its samples)
        assert stages["evaluate"].data.tags["fiftyone_dataset"] == f"{EVAL_DATASET}-{name}"
    assert sorted(int(v.version) for v in client.search_model_versions("name='elite-smoke'")) == [1, 2, 3]
    # each experiment's register gate compared against the champion of this store: v1 from the baseline run,
    # or v2 when the first experiment was promoted
    shown = json.loads(dvc(repo, env, "exp", "show", "--json"))
    registered = {name: _exp_metrics(shown, name)["metrics/register.json"]["data"] for name in EXPERIMENTS}
    assert sorted(r["version"] for r in registered.values()) == [2, 3]
    for name, record in registered.items():
        assert record["previous_champion"] == (1 if record["version"] == 2 else registered["lr-temp"]["champion"])
        assert by_exp[name]["register"].data.tags["register.version"] == str(record["version"])


def _exp_metrics(shown: list, name: str) -> dict:
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            if exp.get("name") == name:
                return exp["revs"][0]["data"]["metrics"]
    raise AssertionError(f"{name} not in dvc exp show")


def test_exp_show_lists_params_and_metrics(experiments):
    repo, env = experiments
    header, *rows = csv.reader(io.StringIO(dvc(repo, env, "exp", "show", "--csv")))
    for name, lr in EXPERIMENTS.items():
        row = dict(zip(header, next(r for r in rows if r[0] == name)))
        assert float(row["train_local.smoke.learning_rate"]) == float(lr)
        assert float(row["metrics/train_local.json:learning_rate"]) == float(lr)
        assert row["overall.clip_t"] and row["overall.dino_i"] and row["metrics/train_local.json:final_loss"]
    diff = json.loads(dvc(repo, env, "metrics", "diff", *EXPERIMENTS, "--json"))
    assert diff["metrics/train_local.json"]["learning_rate"]["old"] == float(EXPERIMENTS["lr-temp"])


def test_plots_diff_of_two_experiments(experiments, tmp_path):
    repo, env = experiments
    dvc(repo, env, "plots", "diff", *EXPERIMENTS, "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    assert all(name in html for name in EXPERIMENTS)
    data = json.loads(dvc(repo, env, "plots", "diff", *EXPERIMENTS, "--json", "--split"))["data"]
    for plot in ("plots/train_local.csv", "lambda_sweep"):  # the loss curves and the lambda sweep, side by side
        assert data[plot][0]["revisions"] == list(EXPERIMENTS), plot


# --- the same runs in MLflow: grouped, with datasets, images, linked registered versions, and in the UI ------
def _runs(repo) -> list:
    client = _client(repo)
    return client.search_runs([client.get_experiment_by_name("elite").experiment_id], max_results=500)


def _pipeline_runs(repo) -> dict:
    """pipeline run name -> (pipeline run, {stage: child run})."""
    runs = _runs(repo)
    parents = {r.info.run_id: r for r in runs if PIPELINE_TAG in r.data.tags}
    out = {p.info.run_name: (p, {}) for p in parents.values()}
    for r in runs:
        parent = parents.get(r.data.tags.get("mlflow.parentRunId"))
        if parent is not None:
            out[parent.info.run_name][1][r.data.tags["stage"]] = r
    return out


def test_each_dvc_command_groups_its_stage_runs_under_one_pipeline_run(experiments):
    repo, _ = experiments
    groups = _pipeline_runs(repo)
    assert set(groups) == {"dvc repro", "dvc exp run lr-temp", "dvc exp run lr-queued"}
    assert set(groups["dvc repro"][1]) == {
        "download",
        "curate",
        "dreambench",
        "mask",
        "train_global",
        "train_local",
        "evaluate",
        "register",
    }
    for name in EXPERIMENTS:
        parent, stages = groups[f"dvc exp run {name}"]
        assert set(stages) == {"train_local", "evaluate", "register"}
        assert (
            parent.data.tags["dvc.experiment"] == name
            and stages["train_local"].info.run_name == f"train_local ({name})"
        )
    assert all(p.info.status == "FINISHED" and p.info.end_time for p, _ in groups.values())
    orphans = [
        r.info.run_name
        for r in _runs(repo)
        if PIPELINE_TAG not in r.data.tags and "mlflow.parentRunId" not in r.data.tags
    ]
    assert orphans == []


def test_runs_list_their_datasets_and_the_experiment_opens_on_runs(experiments):
    repo, _ = experiments
    stages = _pipeline_runs(repo)["dvc repro"][1]
    expected = {
        "curate": {("curated/global", "curated"), ("curated/local", "curated")},
        "mask": {("masks/local", "curated")},
        "train_global": {("curated/global", "training")},
        "train_local": {("masks/local", "training")},
        "evaluate": {("dreambench/subjects", "evaluation")},
    }
    for stage, datasets in expected.items():
        inputs = stages[stage].inputs.dataset_inputs
        got = {(d.dataset.name, next(t.value for t in d.tags if t.key == "mlflow.data.context")) for d in inputs}
        assert got == datasets, stage
    rows = sum(1 for line in (repo / "data" / "masks" / "local.jsonl").read_text().splitlines() if line.strip())
    (train_input,) = stages["train_local"].inputs.dataset_inputs
    assert json.loads(train_input.dataset.profile)["num_rows"] == rows
    assert _client(repo).get_experiment_by_name("elite").tags[KIND_TAG] == KIND


def test_training_sample_grids_show_the_dreambench_concepts(experiments, tmp_path):
    repo, _ = experiments
    client = _client(repo)
    subjects = json.loads((repo / "data" / "dreambench" / "subjects.json").read_text())
    for name, (_, stages) in _pipeline_runs(repo).items():
        for stage in ("train_global", "train_local"):
            if stage not in stages:
                continue
            run_id = stages[stage].info.run_id
            (grid_file,) = [a.path for a in client.list_artifacts(run_id, "samples")]  # sample_every = max_steps
            grid = Image.open(client.download_artifacts(run_id, grid_file, str(tmp_path)))
            assert grid.size == (2 * 64, len(subjects) * 64), (name, stage)
            rows = json.loads(
                Path(client.download_artifacts(run_id, "sample_concepts.json", str(tmp_path))).read_text()
            )
            assert rows == {"rows": [s["subject"] for s in subjects]}
            for i, subject in enumerate(subjects):  # left column: the subject's concept image, not a training row
                shown = Image.open(repo / subject["images"][0]).convert("RGB").resize((64, 64), Image.BICUBIC)
                assert np.array_equal(np.asarray(grid)[i * 64 : (i + 1) * 64, :64], np.asarray(shown)), (
                    stage,
                    subject,
                )


def test_registered_versions_link_their_evaluation_and_describe_themselves(experiments):
    repo, _ = experiments
    client = _client(repo)
    assert client.get_registered_model("elite-smoke").description.startswith("ELITE (Wei et al. 2023)")
    for name, (_, stages) in _pipeline_runs(repo).items():
        evaluation = stages["evaluate"]
        version = client.get_model_version("elite-smoke", stages["register"].data.tags["register.version"])
        assert version.tags["evaluation_run_id"] == evaluation.info.run_id, name
        assert f"runs/{evaluation.info.run_id})" in version.description
        assert "smoke profile" in version.description and "Gate: " in version.description
        assert "data/masks/local.jsonl" in version.description and "CLIP-T " in version.description
        if name != "dvc repro":
            assert f"DVC experiment `{name.rsplit(' ', 1)[1]}`" in version.description
        # the evaluation run holds the report, the grids and the sweep figure
        files = {a.path for a in client.list_artifacts(evaluation.info.run_id)}
        assert {"report.md", "lambda_sweep.png", "dreambench.json", "grids"} <= files, files


@pytest.fixture(scope="module")
def mlflow_ui(experiments, session_tmp):
    """`elite mlflow-ui` in the repository (what `make mlflow-ui` runs), on a free loopback port."""
    repo, env = experiments
    port, log = free_port(), session_tmp / "mlflow-ui.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "elite"), "mlflow-ui", "--port", str(port)],
            cwd=repo,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200,
            120,
            "mlflow ui",
            proc,
            log,
        )
        page = re.search(r"training runs: (\S+)", log.read_text()).group(1)
        yield f"http://127.0.0.1:{port}", page
    finally:
        stop_process(proc)


def test_mlflow_ui_compares_the_training_runs_of_two_experiments(experiments, mlflow_ui):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    repo, _ = experiments
    base, page = mlflow_ui
    groups = _pipeline_runs(repo)
    runs = {name: groups[f"dvc exp run {name}"][1]["train_local"] for name in EXPERIMENTS}
    experiment_id = next(iter(runs.values())).info.experiment_id
    with chrome() as driver:
        driver.get(page)  # the address `elite mlflow-ui` prints: the runs table, not the GenAI overview
        WebDriverWait(driver, 120).until(lambda d: "dvc repro" in d.page_source)
        assert "/runs" in driver.current_url and "workflowType=machine_learning" in driver.current_url
        for name in _pipeline_runs(repo):  # open each pipeline run's group of stage runs
            driver.find_element(By.XPATH, f"//*[@role='gridcell'][.//*[text()='{name}']]//button").click()
        WebDriverWait(driver, 30).until(lambda d: all(f"train_local ({n})" in d.page_source for n in EXPERIMENTS))
        assert "curated/global" in driver.page_source and "masks/local" in driver.page_source  # the Dataset column
        screenshot(driver, "mlflow-runs")
        ids = json.dumps([r.info.run_id for r in runs.values()]).replace(" ", "")
        driver.get(f'{base}/#/compare-runs?runs={ids}&experiments=["{experiment_id}"]&workflowType=machine_learning')
        WebDriverWait(driver, 120).until(lambda d: "Comparing 2 Runs" in d.page_source)
        WebDriverWait(driver, 30).until(lambda d: all(f"train_local ({n})" in d.page_source for n in EXPERIMENTS))
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "svg.main-svg"))  # the plot drawn
        screenshot(driver, "mlflow-compare-training-runs")
        for lr in EXPERIMENTS.values():  # the learning rates, side by side in the parameters table
            cells = driver.find_elements(By.XPATH, f"//*[text()='{float(lr):g}']")
            assert cells, lr
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cells[0])
        screenshot(driver, "mlflow-compare-training-runs-params")


def test_mlflow_ui_shows_the_sample_grids(experiments, mlflow_ui):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    repo, _ = experiments
    base, _ = mlflow_ui
    run = _pipeline_runs(repo)["dvc exp run lr-queued"][1]["train_local"]
    (grid_file,) = [a.path for a in _client(repo).list_artifacts(run.info.run_id, "samples")]
    subjects = json.loads((repo / "data" / "dreambench" / "subjects.json").read_text())
    with chrome() as driver:
        driver.get(
            f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifacts"
            f"?workflowType=machine_learning"
        )
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.XPATH, "//*[text()='samples']"))[0].click()
        name = grid_file.rsplit("/", 1)[1]
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.XPATH, f"//*[text()='{name}']"))[0].click()
        sizes = lambda d: d.execute_script(  # noqa: E731  the decoded <img> elements of the page
            "return Array.from(document.images).filter(i => i.complete).map(i => [i.naturalWidth, i.naturalHeight])"
        )
        WebDriverWait(driver, 60).until(lambda d: [2 * 64, len(subjects) * 64] in sizes(d))
        screenshot(driver, "mlflow-sample-grid")


# --- experiments for people: a readable table, offline plots, like-with-like metrics, a clean round trip -------
def _elite(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return run([str(BIN / "elite"), *args], repo, env)


def test_compare_prints_a_readable_table(experiments):
    repo, env = experiments
    proc = _elite(repo, env, "compare")
    assert proc.returncode == 0, proc.stderr[-2000:]
    header, rule, *rows = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    columns = [c.strip() for c in header.strip("|").split("|")]
    print(f"make compare: {len(columns)} columns: {columns}")
    assert columns[0] == "Experiment" and len(columns) <= 25, columns
    assert {"overall.clip_t", "overall.dino_i", "train_local.smoke.learning_rate"} <= set(columns), columns
    assert not [c for c in columns if c.startswith(("subjects.", "data/", "models/", "elite/"))], columns
    for name, lr in EXPERIMENTS.items():
        row = [c.strip() for c in next(r for r in rows if name in r).strip("|").split("|")]
        assert float(row[columns.index("train_local.smoke.learning_rate")]) == float(lr)


def test_seeds_summary_and_queue(experiments, tmp_path):
    """`elite seeds summary` over two real experiments gives each metric's mean and spread as computed here from
    `dvc exp show`; `elite seeds queue` queues one experiment per seed with both training seeds set."""
    repo, env = experiments
    out = tmp_path / "seeds.json"
    proc = _elite(repo, env, "seeds", "summary", *EXPERIMENTS, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(out.read_text())
    shown = json.loads(dvc(repo, env, "exp", "show", "--json"))
    values = [
        _exp_metrics(shown, name)["metrics/dreambench.json"]["data"]["overall"]["clip_t"] for name in EXPERIMENTS
    ]
    clip_t = summary["metrics"]["overall.clip_t"]
    assert summary["experiments"] == list(EXPERIMENTS) and clip_t["n"] == 2
    assert clip_t["mean"] == pytest.approx(np.mean(values)) and clip_t["sd"] == pytest.approx(np.std(values, ddof=1))
    assert "| overall.clip_t |" in proc.stdout
    missing = _elite(repo, env, "seeds", "summary", "no-such-exp")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no-such-exp" in missing.stderr
    queued = _elite(repo, env, "seeds", "queue", "--seeds", "3", "4")
    try:
        assert queued.returncode == 0, queued.stderr[-2000:]
        status = dvc(repo, env, "queue", "status")
        assert re.search(r"seed-3\s.*Queued", status) and re.search(r"seed-4\s.*Queued", status), status
    finally:
        dvc(repo, env, "queue", "remove", "--queued")


def test_static_plots_render_offline(experiments, tmp_path):
    repo, env = experiments
    proc = _elite(repo, env, "plots", *EXPERIMENTS, "--out", str(tmp_path / "svg"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = {p.name: p.read_text() for p in (tmp_path / "svg").glob("*.svg")}
    assert {"lambda_sweep.svg", "plots_train_local.csv.svg"} <= set(files), sorted(files)
    for name, svg in files.items():
        assert svg.lstrip().startswith("<svg") and "<script" not in svg and "http" not in svg.split(">", 1)[1], name
        assert all(exp in svg for exp in EXPERIMENTS), name  # both experiments in the legend
    proc = _elite(repo, env, "plots", "--format", "png", "--out", str(tmp_path / "png"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    for png in (tmp_path / "png").glob("*.png"):
        assert Image.open(png).size[0] > 300


def test_metrics_diff_compares_like_with_like(experiments):
    repo, env = experiments
    proc = _elite(repo, env, "metrics-diff", *EXPERIMENTS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("profile smoke: lr-temp -> lr-queued") and "final_loss" in proc.stdout
    # the first commit of the copy holds the toy reference run: not compared with a smoke run
    proc = _elite(repo, env, "metrics-diff", "HEAD~1", "HEAD")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: HEAD~1 ran the toy profile, HEAD the smoke profile: compare like with like; name two revisions of one "
        "profile (`elite metrics-diff A B`, e.g. two experiments from `dvc exp show`), or pass them to "
        "`dvc metrics diff` yourself"
    ]


def test_experiments_round_trip_to_a_clean_tree(experiments, session_tmp):
    """Last in this module: it changes the workspace. `dvc exp apply` and `dvc exp branch` leave no untracked
    files and no changed .gitignore (the repository commits the ones DVC writes)."""
    repo, env = experiments
    baseline = (session_tmp / "exp-baseline-status.txt").read_text().splitlines()
    assert not [line for line in baseline if line.startswith("??")], baseline  # after the baseline `dvc repro`
    dvc(repo, env, "exp", "apply", "lr-temp")
    status = git_status(repo).splitlines()
    assert not [line for line in status if line.startswith("??") or line.endswith(".gitignore")], status
    assert any(line.endswith("params.yaml") for line in status), status  # the experiment's params came in
    dvc(repo, env, "exp", "branch", "lr-queued", "lr-queued-branch")
    changed = git(repo, "diff", "--name-only", "HEAD", "lr-queued-branch").split()
    assert "params.yaml" in changed and not [f for f in changed if f.endswith(".gitignore")], changed

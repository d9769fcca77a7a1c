"""DVC for people, in a copy of this checkout, without running stages: the committed .gitignore files name every
DVC output (so runs, `dvc exp apply` and `dvc exp branch` leave nothing untracked), `elite plots` renders the
committed plots offline, `elite compare` prints a short table and `elite metrics-diff` refuses two profiles.
(test_pipeline_experiments.py runs the same commands on real experiments.)"""

from __future__ import annotations

import subprocess

import yaml
from PIL import Image
from pipeline_helpers import BIN, copy_checkout, git, run, stage_env


def _outs(repo) -> list[str]:
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return [next(iter(o)) if isinstance(o, dict) else o for spec in stages.values() for o in spec.get("outs", [])]


def test_committed_gitignores_name_every_dvc_output(session_tmp):
    repo = copy_checkout(session_tmp / "people-ignore")
    for out in _outs(repo):  # what a run writes: a folder with a file, or a file
        path = repo / out
        target = path if path.suffix else path / "part.bin"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("x")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    assert status == "", status
    # ... by the rule DVC itself checks before writing a .gitignore entry (it writes none for an ignored path)
    from scmrepo.git import Git

    scm = Git(str(repo))
    assert all(scm.is_ignored(str(repo / out)) for out in _outs(repo))


def test_plots_compare_and_metrics_diff_for_people(session_tmp, tmp_path):
    repo = copy_checkout(session_tmp / "people-cmds")
    env = stage_env(repo)
    elite = str(BIN / "elite")

    done = run([elite, "plots", "--out", str(tmp_path / "svg")], repo, env)
    assert done.returncode == 0, done.stderr[-2000:]
    svgs = {p.name: p.read_text() for p in (tmp_path / "svg").glob("*.svg")}
    assert {"lambda_sweep.svg", "plots_train_global.csv.svg", "plots_train_local.csv.svg"} <= set(svgs), sorted(svgs)
    for name, svg in svgs.items():  # self-contained: no script, no address to fetch anything from
        assert svg.lstrip().startswith("<svg") and "<script" not in svg and "http" not in svg.split(">", 1)[1], name
    done = run([elite, "plots", "--format", "png", "--out", str(tmp_path / "png")], repo, env)
    assert done.returncode == 0 and Image.open(tmp_path / "png" / "lambda_sweep.png").size[0] > 300

    done = run([elite, "compare"], repo, env)
    assert done.returncode == 0, done.stderr[-2000:]
    header = next(line for line in done.stdout.splitlines() if line.startswith("|"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[0] == "Experiment" and {"overall.clip_t", "overall.dino_i"} <= set(columns), columns
    assert len(columns) <= 25 and not [c for c in columns if c.startswith(("subjects.", "data/", "elite/"))]

    # the copy's commit holds the toy reference run; a commit on the smoke profile is not compared with it
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "commit", "-q", "-am", "smoke")
    done = run([elite, "metrics-diff", "HEAD~1", "HEAD"], repo, env)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: HEAD~1 ran the toy profile, HEAD the smoke profile: compare like with like; name two revisions of one "
        "profile (`elite metrics-diff A B`, e.g. two experiments from `dvc exp show`), or pass them to "
        "`dvc metrics diff` yourself"
    ]
    done = run([elite, "metrics-diff", "HEAD~1", "HEAD~1"], repo, env)  # one profile: DVC's diff, key rows
    assert done.returncode == 0 and done.stdout.startswith("profile toy: HEAD~1 -> HEAD~1"), done.stderr[-2000:]

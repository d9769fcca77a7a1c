"""flows/stages.py on small real cases: output streaming, the profile switch, and the sharded-stage
protocol (clear stale outputs, resume an interrupted run, finish with `dvc commit`) on a toy DVC repo."""

from __future__ import annotations

import sys
import time

import pytest
import yaml
from pipeline_helpers import BIN, REPO, dvc, git, stage_env

from elite.errors import EliteError
from flows import stages as S


def test_run_logged_streams_lines_and_throttles_progress_bars(tmp_path):
    script = (
        "import sys, time\n"
        "print('first', flush=True)\n"
        "for i in range(200):\n"
        "    sys.stderr.write(f'\\rbar {i}'); sys.stderr.flush(); time.sleep(0.001)\n"
        "sys.stderr.write('\\n'); print('last', flush=True)\n"
    )
    lines: list[str] = []
    S.run_logged([sys.executable, "-c", script], tmp_path, S.tool_env(), lines.append)
    assert lines[0] == "first" and lines[-1] == "last"
    bars = [line for line in lines if line.startswith("bar ")]
    assert 1 <= len(bars) < 10 and bars[-1] == "bar 199"  # redraws thinned out, the final state kept


def test_run_logged_keeps_crlf_lines_split_across_reads(tmp_path):
    script = (
        "import sys, time\n"
        "sys.stdout.write('bar\\rone\\r'); sys.stdout.flush(); time.sleep(0.3)\n"
        "sys.stdout.write('\\ntwo\\r\\n'); sys.stdout.flush()\n"
    )
    lines: list[str] = []
    S.run_logged([sys.executable, "-c", script], tmp_path, S.tool_env(), lines.append)
    assert lines == ["bar", "one", "two"]  # `one` ended with \r\n, split over two reads: a line, not a redraw


def test_run_logged_failure_names_the_command_and_its_last_lines(tmp_path):
    with pytest.raises(S.CommandFailed, match=r"(?s)exited with code 3.*boom"):
        S.run_logged("echo boom; exit 3", tmp_path, S.tool_env(), lambda line: None)


def test_tool_env_puts_this_virtualenv_first():
    env = S.tool_env({"X": "1"})
    assert env["PATH"].split(":")[0] == str(BIN) and env["X"] == "1" and env["PYTHONUNBUFFERED"] == "1"


def test_apply_profile_edits_only_the_profile_line(tmp_path):
    (tmp_path / "params.yaml").write_text("# header\nprofile: smoke   # the default\nmodels:\n  profile: x\n")
    assert S.apply_profile(tmp_path, None, print) == "smoke"
    assert S.apply_profile(tmp_path, "paper", print) == "paper"
    assert (
        tmp_path / "params.yaml"
    ).read_text() == "# header\nprofile: paper   # the default\nmodels:\n  profile: x\n"
    with pytest.raises(EliteError, match="profile must be one of"):
        S.apply_profile(tmp_path, "huge", print)
    (tmp_path / "params.yaml").write_text("models: {}\n")
    with pytest.raises(EliteError, match="no top-level `profile:` line"):
        S.apply_profile(tmp_path, "smoke", print)


def test_shardable_stages():
    assert S.shardable(None) == ("mask", "evaluate") and S.shardable(["evaluate"]) == ("evaluate",)
    with pytest.raises(EliteError, match="train_local cannot be sharded"):
        S.shardable(["train_local"])


def test_load_stages_reads_the_real_dvc_yaml():
    stages = {s.name: s for s in S.load_stages(REPO)}
    assert list(stages)[0] == "plugins" and list(stages)[-1] == "register"
    assert "metrics/dreambench.json" in stages["evaluate"].metrics and "data/eval" in stages["evaluate"].outs
    assert set(S.SHARDABLE) <= set(stages)
    with pytest.raises(EliteError, match="no stage nope"):
        S.select(list(stages.values()), ["nope"])


TOY = """stages:
  mask:
    cmd: python3 make.py
    deps: [src.txt, make.py]
    params: [profile, mask]
    outs: [out]
    metrics:
      - m.json:
          cache: false
"""
MAKE = """import json, os, sys, yaml
p = yaml.safe_load(open('params.yaml'))
os.makedirs('out', exist_ok=True)
shard = sys.argv[2] if len(sys.argv) > 2 else None
items = range(4) if shard is None else range(int(shard.split('/')[0]), 4, int(shard.split('/')[1]))
for i in items:
    path = f'out/{i}.txt'
    if not os.path.exists(path):  # resumable: finished items are kept
        open(path, 'w').write(f"{open('src.txt').read().strip()} {p['mask']['k']} {i}")
if shard is None:
    json.dump({'items': len(os.listdir('out'))}, open('m.json', 'w'))
"""


@pytest.fixture
def toy_repo(tmp_path):
    repo = tmp_path / "toy"
    repo.mkdir()
    (repo / "dvc.yaml").write_text(TOY)
    (repo / "make.py").write_text(MAKE)
    (repo / "src.txt").write_text("v1\n")
    (repo / "params.yaml").write_text("profile: smoke\nmask:\n  k: 1\n")
    git(repo, "init", "-q")
    env = stage_env(repo)
    dvc(repo, env, "init", "-q")
    dvc(repo, env, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "toy")
    return repo, env


def test_sharded_stage_clears_resumes_and_commits(toy_repo):
    repo, env = toy_repo
    stage = S.select(S.load_stages(repo), ["mask"])[0]
    log: list[str] = []
    assert S.prepare_shards(repo, stage, env, log.append) is False  # up to date: no shards

    (repo / "src.txt").write_text("v2\n")
    assert S.prepare_shards(repo, stage, env, log.append) is True
    assert not (repo / "out").exists() and not (repo / "m.json").exists()  # stale outputs cleared

    S.run_logged(S.shard_command(stage, 0, 2), repo, env, log.append)  # one shard, then "killed"
    assert sorted(p.name for p in (repo / "out").iterdir()) == ["0.txt", "2.txt"]
    assert S.prepare_shards(repo, stage, env, log.append) is True  # same deps and params: resume
    assert (repo / "out/0.txt").read_text() == "v2 1 0"
    assert any("resuming" in line for line in log)

    (repo / "params.yaml").write_text("profile: smoke\nmask:\n  k: 2\n")  # params changed meanwhile
    assert S.prepare_shards(repo, stage, env, log.append) is True
    assert not (repo / "out").exists()  # partial work of other params is not reused

    for i in range(2):
        S.run_logged(S.shard_command(stage, i, 2), repo, env, log.append)
    S.finish_sharded(repo, stage, env, log.append)
    assert S.dvc_status(repo, "mask", env) == {}
    assert (repo / "out/3.txt").read_text() == "v2 2 3"
    assert yaml.safe_load((repo / "m.json").read_text()) == {"items": 4}
    assert not (repo / S.STATE_DIR / "mask.shards.json").exists()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["mask"]
    assert lock["params"]["params.yaml"]["mask"] == {"k": 2}


def test_checkout_lock_is_exclusive(tmp_path):
    import subprocess

    (tmp_path / ".dvc").mkdir()
    holder = (
        f"import sys, time; sys.path.insert(0, {str(REPO)!r})\nfrom flows.stages import checkout_lock\n"
        f"from pathlib import Path\nwith checkout_lock(Path({str(tmp_path)!r}), print):\n"
        "    print('held', flush=True); time.sleep(3)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    waited: list[str] = []
    start = time.monotonic()
    with S.checkout_lock(tmp_path, waited.append):
        assert time.monotonic() - start > 1.5  # got the lock only once the holder let go
    assert waited and "waiting" in waited[0]
    proc.wait()


def test_metrics_markdown_and_numeric_metrics(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/a.json").write_text('{"overall": {"clip_t": 0.25, "n": 3}, "ok": true, "name": "x|y"}')
    stage = S.Stage("a", "true", (), (), ("metrics/a.json",), ("metrics/a.json", "metrics/missing.json"))
    metrics = S.read_metrics(tmp_path, [stage])
    assert metrics == {"metrics/a.json": {"overall.clip_t": 0.25, "overall.n": 3, "ok": True, "name": "x|y"}}
    md = S.metrics_markdown("T", [{"stage": "a", "result": "ran", "seconds": 1.25}], metrics)
    assert "| a | ran | 1.2 |" in md and "| overall.clip_t | 0.25 |" in md and "x\\|y" in md
    assert S.numeric_metrics(metrics) == {"a/overall.clip_t": 0.25, "a/overall.n": 3.0}


def test_flow_entrypoint_is_importable_from_its_file():
    """prefect.yaml and `serve` name flows/elite_flow.py:elite; the flow is called `elite`; prefect.yaml's
    deployments (GPU nodes) have names of their own, not those `make serve` serves."""
    from prefect.flows import load_flow_from_entrypoint

    assert load_flow_from_entrypoint(str(REPO / "flows/elite_flow.py") + ":elite").name == "elite"
    entry = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    assert {d["name"]: d["parameters"]["profile"] for d in entry} == {"full-gpu": "paper", "smoke-gpu": "smoke"}
    from flows.serve import DEPLOYMENTS

    assert not set(DEPLOYMENTS) & {d["name"] for d in entry}
    assert all(d["entrypoint"] == "flows/elite_flow.py:elite" for d in entry)

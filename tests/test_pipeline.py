"""End to end: `dvc repro` on the smoke preset in a scratch copy of the repository."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def sh(cmd, cwd, check=True):
    env = dict(os.environ, VIRTUAL_ENV=sys.prefix, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("repo")
    for item in ("dvc.yaml", "params.yaml", "presets", "scripts", "src", ".gitignore", ".dvcignore"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, path / item)
    sh(["git", "init", "-q"], path)
    sh([sys.executable, "-m", "dvc", "init", "-q"], path)
    sh([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], path)
    sh([sys.executable, "-m", "redraw.cli", "preset", "smoke"], path)
    return path


def test_repro_collects_and_validates_then_does_nothing(repo):
    first = sh([sys.executable, "-m", "dvc", "repro"], repo)
    for stage in ("collect_source", "collect_target", "validate_target", "pretrain", "oracle"):
        assert f"Running stage '{stage}'" in first.stdout
    source = json.loads((repo / "reports/collect_source.json").read_text())
    target = json.loads((repo / "reports/collect_target.json").read_text())
    assert source["data/episodes"] == 2 and source["data/transitions"] == 100
    assert target["data/transitions"] == 200  # 200 transitions, 50-step episodes
    validation = json.loads((repo / "reports/validate_target.json").read_text())
    assert validation["validate/success"] == 1
    assert (repo / "reports/validation/data_docs/index.html").is_file()
    meta = json.loads((repo / "data/target/metadata.json").read_text())
    assert meta["env"] == "pendulum-swingup-reversed" and meta["obs_mode"] == "proprio"

    shown = sh([sys.executable, "-m", "dvc", "metrics", "show"], repo)
    assert "data/transitions" in shown.stdout
    for name in ("pretrain", "oracle"):
        metrics = json.loads((repo / f"reports/{name}.json").read_text())
        assert metrics["train/steps"] == 100 and metrics["train/updates"] == 50
        assert (repo / f"models/{name}/agent.pt").is_file()
        assert (repo / f"reports/{name}_figures/open_loop.png").is_file()

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["redraw"])
    assert set(runs["tags.mlflow.runName"]) >= {"pretrain", "oracle"}
    assert set(runs["status"]) == {"FINISHED"} and set(runs["tags.preset"]) == {"smoke"}

    second = sh([sys.executable, "-m", "dvc", "repro"], repo)
    assert "Running stage" not in second.stdout, second.stdout


def test_rejected_target_data_fails_the_pipeline_and_is_left_untouched(repo):
    bad = repo / "data" / "bad"
    shutil.copytree(repo / "data" / "target", bad)
    victim = sorted(bad.glob("*.npz"))[1]
    with np.load(victim, allow_pickle=False) as npz:
        episode = dict(npz)
    episode["reward"][5] = np.nan
    np.savez_compressed(victim, **episode)
    before = {p.name: p.read_bytes() for p in bad.iterdir()}
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("target_data: data/target", "target_data: data/bad"))
    try:
        proc = sh([sys.executable, "-m", "dvc", "repro"], repo, check=False)
    finally:
        (repo / "params.yaml").write_text(params)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "REJECTED" in output and victim.name in output and "reward" in output
    assert {p.name: p.read_bytes() for p in bad.iterdir()} == before
    result = json.loads((repo / "reports/validation/result.json").read_text())
    assert result["success"] is False

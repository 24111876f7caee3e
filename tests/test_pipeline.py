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


METHODS = ("redraw", "draw_finetune", "dreamer_finetune")


def test_repro_runs_the_whole_chain_then_does_nothing(repo):
    first = sh([sys.executable, "-m", "dvc", "repro"], repo)
    stages = ["collect_source", "collect_target", "validate_target", "pretrain", "oracle", "pretrain_rssm",
              *(f"{s}@{m}" for s in ("calibrate", "train_policy") for m in METHODS),
              *(f"evaluate@{m}" for m in ("source", "no_adapt", *METHODS, "oracle")), "results"]
    for stage in stages:
        assert f"Running stage '{stage}'" in first.stdout, stage
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

    # calibration: the dynamics gap before/after on held-out target data, figures, and for ReDRAW
    # a residual beside a world model that is bit-identical to the pretrained one
    import torch

    for method in METHODS:
        gap = json.loads((repo / f"reports/calibrate/{method}.json").read_text())
        assert gap["gap/kl_filter_source"] > 0 and gap["gap/kl_filter_adapted"] > 0
        assert (repo / f"reports/calibrate/{method}_figures/dynamics_gap.png").is_file()
        assert (repo / f"reports/calibrate/{method}_figures/open_loop.png").is_file()
        assert (repo / f"models/policy/{method}/agent.pt").is_file()
    pre = torch.load(repo / "models/pretrain/agent.pt", weights_only=True)["state"]["agent"]["model"]
    cal = torch.load(repo / "models/calibrate/redraw/agent.pt", weights_only=True)["state"]["agent"]["model"]
    assert any(k.startswith("wm.residual.") for k in cal)
    for k, v in pre.items():
        assert torch.equal(v, cal[k]), k
    table = (repo / "reports/results.md").read_text()
    for method in ("source", "no_adapt", *METHODS, "oracle"):
        assert f"| {method}" in table
    results = json.loads((repo / "reports/results.json").read_text())
    assert set(results) == {f"{m}/return_mean" for m in ("source", "no_adapt", *METHODS, "oracle")}
    assert (repo / "reports/results.png").is_file()

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["redraw"])
    assert set(runs["tags.mlflow.runName"]) >= {"pretrain", "oracle", "calibrate_redraw", "train_policy_redraw",
                                                "evaluate_redraw", "results"}
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
    calibrated = (repo / "models/calibrate/redraw/agent.pt").read_bytes()
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("target_data: data/target", "target_data: data/bad"))
    try:
        proc = sh([sys.executable, "-m", "dvc", "repro"], repo, check=False)
        # calibrating on the rejected data by hand is refused too, naming the failure
        direct = sh([sys.executable, "-m", "redraw.stages.calibrate", "redraw", "--no-progress"], repo, check=False)
    finally:
        (repo / "params.yaml").write_text(params)
    assert "Running stage 'calibrate@redraw'" not in proc.stdout
    assert direct.returncode == 2 and "rejected by validation" in direct.stderr and victim.name in direct.stderr
    assert (repo / "models/calibrate/redraw/agent.pt").read_bytes() == calibrated
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "REJECTED" in output and victim.name in output and "reward" in output
    assert {p.name: p.read_bytes() for p in bad.iterdir()} == before
    result = json.loads((repo / "reports/validation/result.json").read_text())
    assert result["success"] is False

"""End to end: `dvc repro` on the smoke preset in a scratch copy of the repository."""

import json
import shutil
import sys

import numpy as np
import pytest

from conftest import sh

pytestmark = pytest.mark.slow


METHODS = ("redraw", "draw_finetune", "dreamer_finetune", "redraw_pessimistic")


@pytest.fixture
def repo(smoke_repo):
    return smoke_repo.path


def test_repro_runs_the_whole_chain_then_does_nothing(smoke_repo, repo):
    first = smoke_repo.first_run
    stages = ["collect_source", "collect_oracle", "collect_target", "validate_target", "pretrain", "oracle", "pretrain_rssm",
              *(f"{s}@{m}" for s in ("calibrate", "train_policy") for m in METHODS),
              *(f"evaluate@{m}" for m in ("source", "no_adapt", *METHODS, "oracle")), "results"]
    for stage in [*stages, "register"]:
        assert f"Running stage '{stage}'" in first, stage
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
    # redraw_pessimistic: an ensemble of pessimism.members residuals, its disagreement in the policy stage
    from redraw.checkpoint import load_checkpoint

    ens = load_checkpoint(repo / "models/calibrate/redraw_pessimistic/agent.pt", map_location="cpu")
    assert ens["identity"]["residual"]["members"] == 5
    assert {k.split(".")[3] for k in ens["agent"]["model"] if k.startswith("wm.residual.nets.")} == set("01234")
    pess = json.loads((repo / "reports/train_policy/redraw_pessimistic.json").read_text())
    assert pess["pessimism/disagreement"] > 0
    table = (repo / "reports/results.md").read_text()
    for method in ("source", "no_adapt", *METHODS, "oracle"):
        assert f"| {method}" in table
    results = json.loads((repo / "reports/results.json").read_text())
    assert set(results) == ({f"{m}/return_mean" for m in ("source", "no_adapt", *METHODS, "oracle")}
                            | {f"{m}/minus_no_adapt" for m in METHODS})
    # each adaptation against no_adapt on the same test episodes: the mean of the per-episode differences
    ev = {m: json.loads((repo / f"reports/evaluate/{m}.json").read_text())["returns"] for m in ("no_adapt", "redraw")}
    assert results["redraw/minus_no_adapt"] == pytest.approx(np.mean(np.subtract(ev["redraw"], ev["no_adapt"])))
    assert "| redraw | " in table.split("minus no_adapt")[1]
    assert (repo / "reports/results.png").is_file()

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["redraw"])
    stage_runs = runs[runs["tags.redraw.kind"] != "pipeline"]
    assert set(stage_runs["tags.mlflow.runName"]) >= set(stages) | {"register"}
    # every stage of the first `dvc repro` nests under the one pipeline run of this commit and
    # params (other tests change params: they make pipeline runs of their own), with its own params
    first_runs = stage_runs.sort_values("start_time").drop_duplicates("tags.mlflow.runName", keep="first")
    first_runs = first_runs[first_runs["tags.mlflow.runName"].isin([*stages, "register"])]
    parents = set(runs[runs["tags.redraw.kind"] == "pipeline"]["run_id"])
    assert len(set(first_runs["tags.mlflow.parentRunId"])) == 1 and set(first_runs["tags.mlflow.parentRunId"]) <= parents
    calib = stage_runs[stage_runs["tags.mlflow.runName"] == "calibrate@redraw"].iloc[0]
    assert calib["params.calibrate.residual.lr"] == "0.01" and calib["params.preset"] == "smoke"
    assert "params.pretrain.steps" not in calib or calib.isna()["params.pretrain.steps"]
    assert len(calib["tags.target_data_hash"]) == 64
    evaluated = stage_runs[stage_runs["tags.mlflow.runName"] == "evaluate@redraw"].iloc[0]
    assert "metrics.return_mean" in runs.columns and evaluated["metrics.return_mean"] == json.loads(
        (repo / "reports/evaluate/redraw.json").read_text())["return_mean"]
    assert set(stage_runs["status"]) == {"FINISHED"} and set(runs["tags.preset"]) == {"smoke"}

    second = sh([sys.executable, "-m", "dvc", "repro"], repo)
    assert "Running stage" not in second.stdout, second.stdout


def test_policy_learning_curve_in_the_target_leaves_the_trained_policy_unchanged(repo, tmp_path):
    import torch

    # the smoke preset evaluates every 10 of its 20 policy updates in the target simulator
    curve = json.loads((repo / "reports/train_policy/redraw_curve.json").read_text())
    assert [point["update"] for point in curve] == [10, 20]
    assert all(np.isfinite(point["eval_return"]) for point in curve)
    assert json.loads((repo / "reports/train_policy/redraw.json").read_text())["eval/return"] == curve[-1]["eval_return"]
    # the same training without those evaluations gives the same policy, weight for weight
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy, symlinks=True)
    params = (copy / "params.yaml").read_text()
    assert params.count("eval_every: 10") == 1
    (copy / "params.yaml").write_text(params.replace("eval_every: 10", "eval_every: 0"))
    sh([sys.executable, "-m", "redraw.stages.train_policy", "redraw", "--no-progress"], copy)
    assert json.loads((copy / "reports/train_policy/redraw_curve.json").read_text()) == []
    with_curve = torch.load(repo / "models/policy/redraw/agent.pt", weights_only=True)["state"]["agent"]["model"]
    without = torch.load(copy / "models/policy/redraw/agent.pt", weights_only=True)["state"]["agent"]["model"]
    assert with_curve.keys() == without.keys()
    for k, v in with_curve.items():
        assert torch.equal(v, without[k]), k


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

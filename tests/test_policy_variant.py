"""Policy-stage variants on a finished work dir (redraw.experiments.policy_variant): the copy's params,
the paired comparison and the record."""

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import sh

from redraw.experiments import policy_variant

ROOT = Path(__file__).resolve().parents[1]


def test_a_variant_has_a_copy_of_its_own_named_after_its_settings(tmp_path):
    name = policy_variant.variant_name({"train_policy.bc_weight": 1.0, "train_policy.lr": 3e-5})
    assert name == "bc_weight=1.0,lr=3e-05"
    assert policy_variant.variant_dir(tmp_path / "cpu-seed1", name).name == "cpu-seed1-variant-bc_weight=1.0,lr=3e-05"


def test_an_option_newer_than_the_work_dir_is_added_and_an_unknown_key_refused(tmp_path):
    from redraw.config import ConfigError, load_params

    (tmp_path / "params.yaml").write_text("seed: 1\ntrain_policy:\n  updates: 10   # how many\n  lr: 0.0\n")
    policy_variant.set_variant_params(tmp_path, {"train_policy.bc_weight": 2.0, "train_policy.updates": 20})
    params = load_params(tmp_path / "params.yaml")
    assert params["train_policy"] == {"updates": 20, "lr": 0.0, "bc_weight": 2.0}
    assert "# how many" in (tmp_path / "params.yaml").read_text()
    with pytest.raises(ConfigError, match="train_policy.colour"):
        policy_variant.set_variant_params(tmp_path, {"train_policy.colour": 1})


def test_the_comparison_is_paired_over_the_test_episodes_both_ran():
    out = policy_variant.paired([10.0, 20.0, 30.0, 40.0], [15.0, 24.0, 37.0])
    assert out["base"]["episodes"] == out["changed"]["episodes"] == out["difference"]["episodes"] == 3
    assert out["base"]["return_mean"] == 20.0 and out["changed"]["return_mean"] == pytest.approx(76 / 3)
    assert out["difference"]["return_mean"] == pytest.approx(16 / 3)
    assert out["difference"]["return_ci_low"] < 16 / 3 < out["difference"]["return_ci_high"]


def test_a_work_dir_without_the_methods_evaluation_is_refused_naming_the_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        policy_variant.main(["--workdir", str(tmp_path / "cpu-seed1"), "--set", "train_policy.bc_weight=1"])
    assert "cpu-seed1/reports/evaluate/redraw.json: missing" in capsys.readouterr().err
    (tmp_path / "cpu-seed1/reports/evaluate").mkdir(parents=True)
    (tmp_path / "cpu-seed1/reports/evaluate/redraw.json").write_text("{}")
    with pytest.raises(SystemExit):
        policy_variant.main(["--workdir", str(tmp_path / "cpu-seed1"), "--set", "calibrate.updates=5"])
    assert "only train_policy keys" in capsys.readouterr().err
    assert not (tmp_path / "cpu-seed1-variant-updates=5").exists()


@pytest.mark.slow  # it needs the smoke pipeline's outputs (smoke_repo)
def test_two_methods_policy_stages_run_side_by_side_in_one_copy_and_only_they_run(smoke_repo, tmp_path):
    work = tmp_path / "smoke-seed0"
    shutil.copytree(smoke_repo.path, work, symlinks=True)
    # the shared smoke repo may hold another test's verdict on other data: validate the copy's own
    sh([sys.executable, "-m", "dvc", "repro", "-s", "validate_target"], work)
    lock = (work / "dvc.lock").read_text()
    results = tmp_path / "variants.json"
    assert policy_variant.main(["--workdir", str(work), "--method", "redraw", "draw_finetune",
                                "--set", "train_policy.updates=7", "--results", str(results)]) == 0
    dest = policy_variant.variant_dir(work, "updates=7")
    assert (work / "dvc.lock").read_text() == lock  # the work dir itself is untouched
    logs = {p.name for p in (dest / "logs").glob("*.log")}
    assert logs == {f"{stage}-{m}.log" for m in ("redraw", "draw_finetune") for stage in ("train_policy", "evaluate")}
    for m in ("redraw", "draw_finetune"):  # each policy stage ran with the variant's setting
        assert json.loads((dest / f"reports/train_policy/{m}.json").read_text())["policy/updates"] == 7
    recs = json.loads(results.read_text())["records"]
    assert sorted(r["method"] for r in recs) == ["draw_finetune", "redraw"]
    assert {r["variant"] for r in recs} == {"updates=7"} and all(r["difference"]["episodes"] > 0 for r in recs)

"""Policy-stage variants on a finished work dir (benchmarks/policy_variant.py): the copy's params,
the paired comparison and the record."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import policy_variant  # noqa: E402


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

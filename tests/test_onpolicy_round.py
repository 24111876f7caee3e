"""The deploy-log-recalibrate round (benchmarks/onpolicy_round.py): the data it calibrates on, its
work-dir checks and its results file."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import onpolicy_round  # noqa: E402
from synthetic import make_dataset  # noqa: E402

from redraw.data.episodes import list_episodes, load_episode  # noqa: E402
from redraw.data.schema import read_metadata  # noqa: E402
from redraw.validation.suite import ValidationConfig, validate_dataset  # noqa: E402


def test_merged_data_hold_the_first_expert_episodes_then_the_logged_ones(tmp_path):
    expert_meta = make_dataset(tmp_path / "data/target", env="reacher-easy-reversed", episodes=4, steps=70, seed=1)
    make_dataset(tmp_path / "data/onpolicy-redraw", env="reacher-easy-reversed", episodes=2, steps=70, seed=2)
    out = onpolicy_round.merge_data(tmp_path, "redraw", tmp_path / "data/onpolicy-redraw", 3)
    merged = list_episodes(out)
    sources = [*list_episodes(tmp_path / "data/target")[:3], *list_episodes(tmp_path / "data/onpolicy-redraw")]
    assert len(merged) == 5
    for got, want in zip(merged, sources):
        a, b = load_episode(got), load_episode(want)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    meta = read_metadata(out)
    assert meta.env == expert_meta.env and meta.observations == expert_meta.observations
    assert "(3 episodes)" in meta.behaviour and "models/round0/redraw/agent.pt (2 episodes" in meta.behaviour
    cfg = ValidationConfig(min_transitions=300, expected_env="reacher-easy-reversed", expected_obs_mode="proprio")
    assert validate_dataset(out, cfg).success
    assert not list(tmp_path.glob("data/.*partial"))


def test_more_expert_episodes_than_there_are_is_refused_naming_the_data(tmp_path):
    make_dataset(tmp_path / "data/target", episodes=2, steps=70)
    make_dataset(tmp_path / "logged", episodes=1, steps=70)
    with pytest.raises(ValueError, match=r"data/target: 2 expert episodes, 3 asked for"):
        onpolicy_round.merge_data(tmp_path, "redraw", tmp_path / "logged", 3)
    assert not (tmp_path / "data/target-onpolicy-redraw").exists()


def test_a_work_dir_without_the_methods_policy_is_refused_naming_the_file(tmp_path):
    for rel in ("params.yaml", "dvc.yaml", "reports/evaluate/redraw.json", "data/target/metadata.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    with pytest.raises(ValueError, match=r"models/policy/redraw/agent.pt: missing"):
        onpolicy_round.check_workdir(tmp_path, "redraw")
    assert onpolicy_round.round_dir(tmp_path / "cpu-seed1", "redraw").name == "cpu-seed1-onpolicy-redraw"


def test_the_copys_params_point_at_the_merged_data_and_keep_their_comments(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 1\ntarget_data: data/target   # where\ntarget_transitions: 40000\n")
    onpolicy_round.set_params(tmp_path, tmp_path / "data/target-onpolicy-redraw")
    text = (tmp_path / "params.yaml").read_text()
    assert re.search(r"^target_data: data/target-onpolicy-redraw +# where$", text, re.M)
    assert "target_transitions: 0\n" in text and text.startswith("seed: 1\n")


def test_a_record_replaces_the_one_with_its_key_and_keeps_the_others(tmp_path):
    path = tmp_path / "onpolicy_round.json"
    base = {"pair": "reacher-easy-reversed", "seed": 1, "preset": "cpu", "method": "redraw",
            "expert_episodes": 60, "policy_episodes": 20}
    onpolicy_round.merge_record({**base, "round1": {"return_mean": 1.0}}, path)
    onpolicy_round.merge_record({**base, "seed": 2, "round1": {"return_mean": 2.0}}, path)
    onpolicy_round.merge_record({**base, "round1": {"return_mean": 3.0}}, path)
    records = json.loads(path.read_text())["records"]
    assert [(r["seed"], r["round1"]["return_mean"]) for r in records] == [(1, 3.0), (2, 2.0)]

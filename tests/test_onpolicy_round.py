"""The deploy-log-recalibrate round (redraw.experiments.onpolicy_round): the data it calibrates on, its
work-dir checks and its results file."""

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from synthetic import make_dataset  # noqa: E402

from redraw.data.episodes import list_episodes, load_episode  # noqa: E402
from redraw.data.schema import read_metadata  # noqa: E402
from redraw.experiments import onpolicy_round  # noqa: E402
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
    with pytest.raises(ValueError, match=r"data/target: 2 episodes, the first 3 asked for"):
        onpolicy_round.merge_data(tmp_path, "redraw", tmp_path / "logged", 3)
    assert not (tmp_path / "data/target-onpolicy-redraw").exists()


def test_a_work_dir_without_the_methods_policy_is_refused_naming_the_file(tmp_path):
    for rel in ("params.yaml", "dvc.yaml", "reports/evaluate/redraw.json", "data/target/metadata.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    with pytest.raises(ValueError, match=r"models/policy/redraw/agent.pt: missing"):
        onpolicy_round.check_workdir(tmp_path, "redraw")
    assert onpolicy_round.round_dir(tmp_path / "cpu-seed1", "redraw").name == "cpu-seed1-onpolicy-redraw"


def test_rounds_of_other_sizes_get_their_own_copy_and_never_reuse_other_logged_data(tmp_path):
    assert onpolicy_round.round_dir(tmp_path / "cpu-seed1", "redraw", "policy", None, 5).name == \
        "cpu-seed1-onpolicy-redraw-p5"
    assert onpolicy_round.round_dir(tmp_path / "cpu-seed1", "redraw", "policy", 75, 5).name == \
        "cpu-seed1-onpolicy-redraw-p5-e75"
    make_dataset(tmp_path / "data/onpolicy-redraw", env="reacher-easy-reversed", episodes=2, steps=70)
    (tmp_path / "models/round0/redraw").mkdir(parents=True)
    (tmp_path / "models/round0/redraw/agent.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"data/onpolicy-redraw: holds 2 logged episodes, this round asks for 5"):
        onpolicy_round.collect_logged(tmp_path, {}, "redraw", 5, 1)


def test_the_copys_params_point_at_the_merged_data_and_keep_their_comments(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 1\ntarget_data: data/target   # where\ntarget_transitions: 40000\n")
    onpolicy_round.set_params(tmp_path, tmp_path / "data/target-onpolicy-redraw")
    text = (tmp_path / "params.yaml").read_text()
    assert re.search(r"^target_data: data/target-onpolicy-redraw +# where$", text, re.M)
    assert "target_transitions: 0\n" in text and text.startswith("seed: 1\n")


def test_a_record_replaces_the_one_with_its_key_and_keeps_the_others(tmp_path):
    path = tmp_path / "onpolicy_round.json"
    base = {"pair": "reacher-easy-reversed", "seed": 1, "preset": "cpu", "method": "redraw", "logged_by": "policy",
            "expert_episodes": 60, "policy_episodes": 20}
    onpolicy_round.merge_record({**base, "round1": {"return_mean": 1.0}}, path)
    onpolicy_round.merge_record({**base, "seed": 2, "round1": {"return_mean": 2.0}}, path)
    onpolicy_round.merge_record({**base, "round1": {"return_mean": 3.0}}, path)
    records = json.loads(path.read_text())["records"]
    assert [(r["seed"], r["round1"]["return_mean"]) for r in records] == [(1, 3.0), (2, 2.0)]


def test_both_rounds_are_evaluated_on_the_same_test_episodes_and_the_logged_ones_are_their_own(tmp_path):
    """The logged episodes come from the round-0 policy on a stream of their own; both rounds'
    policies are evaluated on the final evaluation's episodes (the stage's first N are the first N
    here), and the result is kept so that a rerun does not act again."""
    import shutil

    import torch
    import yaml
    from test_agent import agent
    from test_protocol import save_agent

    from redraw.data.collect import policy_returns
    from redraw.data.episodes import dataset_stats
    from redraw.envs.pair import env_settings

    dest = tmp_path / "cpu-seed3-onpolicy-redraw"
    torch.manual_seed(0)
    save_agent(agent(), dest / "models/policy/redraw/agent.pt")
    shutil.copy(ROOT / "envs.yaml", dest)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(seed=3)
    params["env"].update(target="pendulum-swingup-reversed", obs_mode="proprio", episode_steps=12)
    logged = onpolicy_round.collect_logged(dest, params, "redraw", 2, workers=1)
    assert (dest / "models/round0/redraw/agent.pt").is_file()
    meta = read_metadata(logged)
    assert meta.behaviour.startswith("policy:") and meta.behaviour.endswith("models/round0/redraw/agent.pt")
    assert dataset_stats(logged)["transitions"] == 24
    save_agent(agent(), dest / "models/oracle/agent.pt")  # the control: the expert logs instead
    control = onpolicy_round.collect_logged(dest, params, "redraw", 2, workers=1, logged_by="expert")
    assert control.name == "expertlog-redraw" and read_metadata(control).behaviour.endswith("models/oracle/agent.pt")
    assert onpolicy_round.round_dir(tmp_path / "cpu-seed3", "redraw", "expert").name == "cpu-seed3-expertlog-redraw"
    torch.manual_seed(1)
    save_agent(agent(), dest / "models/policy/redraw/agent.pt")  # round 1's policy: another one
    both = onpolicy_round.evaluate_both(dest, params, "redraw", 3)
    assert both["episodes"] == 3 and len(both["round0"]["returns"]) == len(both["round1"]["returns"]) == 3
    diff = np.subtract(both["round1"]["returns"], both["round0"]["returns"])
    assert both["difference"]["return_mean"] == pytest.approx(diff.mean())
    cwd = os.getcwd()
    os.chdir(dest)
    try:  # the stage's evaluation of 2 episodes is the first 2 of these
        first, actions = policy_returns("models/round0/redraw/agent.pt", "pendulum-swingup-reversed",
                                        env_settings(params), 2, 3, progress=False)
        logged_actions = [float(np.abs(load_episode(f)["action"][1:].astype(np.float64)).sum())
                          for f in list_episodes(logged)]
    finally:
        os.chdir(cwd)
    assert first == both["round0"]["returns"][:2]
    assert all(a != b for a, b in zip(logged_actions, actions))  # a stream of their own, not the test episodes
    (dest / "models/policy/redraw/agent.pt").unlink()
    assert onpolicy_round.evaluate_both(dest, params, "redraw", 3) == both  # kept: not run again

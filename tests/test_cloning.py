"""Behaviour cloning without a world model (redraw.agent.cloning, redraw.experiments.bc_reference):
what it learns from, that it learns, that it acts reproducibly, and the benchmark on real
pipeline outputs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from redraw.agent.actor_critic import ActorCriticConfig
from redraw.agent.cloning import CloningConfig, fit, observation_keys, pairs, select
from redraw.experiments import bc_reference

ROOT = Path(__file__).resolve().parents[1]

W = np.array([[1.5, -2.0, 0.5], [-1.0, 0.5, 2.0]], np.float32)  # the synthetic expert's action weights


def expert_episode(rng, steps=200):
    """An episode of an expert acting tanh(W obs_t), recorded (as every episode here) at t + 1."""
    state = rng.normal(size=(steps + 1, 3)).astype(np.float32) * np.array([1.0, 3.0, 0.3], np.float32)
    action = np.zeros((steps + 1, 2), np.float32)
    action[1:] = np.clip(np.tanh(state[:-1] @ W.T) + 0.05 * rng.normal(size=(steps, 2)), -1, 1)
    return {"state": state, "action": action, "reward": np.zeros(steps + 1, np.float32),
            "is_first": np.eye(1, steps + 1, dtype=bool)[0]}


def test_each_recorded_action_is_paired_with_the_observation_it_was_taken_from():
    ep = {"state": np.arange(8, dtype=np.float32).reshape(4, 2), "action": np.arange(4, dtype=np.float32)[:, None],
          "reward": np.zeros(4), "is_first": np.array([1, 0, 0, 0], bool), "image": np.zeros((4, 8, 8, 3))}
    assert observation_keys(ep) == ["state"]
    obs, act = pairs([ep, ep], ["state"])
    assert obs.tolist() == [[0, 1], [2, 3], [4, 5]] * 2 and act[:, 0].tolist() == [1, 2, 3] * 2
    with pytest.raises(ValueError, match="no vector observation"):
        observation_keys({"image": np.zeros((4, 8, 8, 3)), "action": np.zeros((4, 1))})


def test_filtered_cloning_keeps_the_episodes_of_the_highest_returns_in_their_order():
    eps = [{"reward": np.array([9.0, r])} for r in (5.0, 1.0, 7.0, 3.0)]  # the first reward is not the episode's
    assert [ep["reward"][1] for ep in select(eps, 0.5)] == [5.0, 7.0]
    assert select(eps, 1.0) == eps and len(select(eps, 0.01)) == 1
    assert CloningConfig().name == "bc" and CloningConfig(top_fraction=0.5).name == "bc_top50"
    with pytest.raises(ValueError, match="top fraction must be in"):
        CloningConfig(top_fraction=0.0)


def test_the_cloned_policy_recovers_the_experts_actions_and_acts_the_same_for_an_episodes_seed():
    rng = np.random.default_rng(0)
    train, held = [expert_episode(rng) for _ in range(10)], [expert_episode(rng) for _ in range(2)]
    ac = ActorCriticConfig(units=64, layers=2)
    policy, curve = fit(train, held, 2, ac, CloningConfig(steps=1500, batch_size=128, lr=1e-3, eval_every=500),
                        seed=0, progress=False)
    assert [c["step"] for c in curve] == [500, 1000, 1500]
    assert curve[-1]["heldout_nll"] < curve[0]["heldout_nll"] and curve[-1]["heldout_nll"] < -1.0
    obs = held[0]["state"][:-1]
    with torch.no_grad():
        mean, _ = policy.actor.mean_std(torch.stack([policy.features({"state": o}) for o in obs]))
    assert np.abs(mean.numpy() - np.tanh(obs @ W.T)).mean() < 0.1
    # its actions depend on the episode's seed alone, not on what it acted before
    first = []
    for _ in range(2):
        policy.reset(np.random.default_rng(7))
        first.append(np.stack([policy.act({"state": o}) for o in obs[:5]]))
    assert np.array_equal(first[0], first[1]) and np.abs(first[0]).max() <= 1.0
    again, _ = fit(train, held, 2, ac, CloningConfig(steps=1500, batch_size=128, lr=1e-3, eval_every=500), seed=0,
                   progress=False)
    assert all(torch.equal(a, b) for a, b in zip(policy.actor.parameters(), again.actor.parameters()))


def test_a_work_dir_without_its_evaluations_or_a_bad_setting_is_refused_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bc_reference.main(["--workdir", str(tmp_path / "cpu-seed1")])
    assert "cpu-seed1/params.yaml: missing" in capsys.readouterr().err
    with pytest.raises(ValueError, match="lr and eval_every above 0, got 10, 256, 0.0"):
        CloningConfig(steps=10, lr=0.0)


def test_an_evaluation_of_a_policy_trained_on_other_target_data_is_left_out(tmp_path, capsys):
    from redraw.checkpoint import save_checkpoint

    (tmp_path / "params.yaml").write_text("seed: 1\npreset: cpu\nenv: {target: t}\ntarget_data: data/target\n"
                                          "collect_target: {transitions: 40000, behaviour: {kind: policy, checkpoint: models/oracle/agent.pt}}\n")
    (tmp_path / "reports/evaluate").mkdir(parents=True)
    for method, data in (("redraw", "abc"), ("draw_finetune", "old"), ("oracle", None)):
        save_checkpoint(tmp_path / f"models/{method}.pt", {"agent": {}}, {"target_data": data} if data else {})
        (tmp_path / f"reports/evaluate/{method}.json").write_text(
            json.dumps({"policy": f"models/{method}.pt", "returns": [1.0, 2.0]}))
    result = {"target_data": "abc", "returns": [3.0, 5.0], "data_return_mean": 4.0, "cloning": {}, "reference": "bc",
              "curve": [{"step": 1, "train_nll": 0.5}]}
    evaluations = {f: json.loads(f.read_text()) for f in sorted((tmp_path / "reports/evaluate").glob("*.json"))}
    rows = bc_reference.records(tmp_path, result, evaluations, "c")
    assert [r["method"] for r in rows] == ["oracle", "redraw"]
    assert rows[0]["target_data"] == "expert" and rows[0]["target_transitions"] == 40000
    assert rows[1]["difference"]["return_mean"] == 2.5
    assert "draw_finetune.json: its policy (models/draw_finetune.pt) was trained on other target data" in \
        capsys.readouterr().out


def workdir_copy(repo: Path, dest: Path) -> Path:
    for rel in ("params.yaml", "envs.yaml", "models/pretrain", "data/target", "reports/validation", "reports/evaluate"):
        (shutil.copytree if (repo / rel).is_dir() else shutil.copy)(repo / rel, dest / rel)
    return dest


@pytest.mark.slow  # it needs the smoke pipeline's outputs (smoke_repo)
def test_the_cloned_policy_runs_each_methods_test_episodes_and_is_recorded_per_method(smoke_repo, tmp_path, capsys):
    (tmp_path / "w/models").mkdir(parents=True)
    (tmp_path / "w/reports").mkdir()
    (tmp_path / "w/data").mkdir()
    work = workdir_copy(smoke_repo.path, tmp_path / "w")
    results = tmp_path / "bc_reference.json"
    args = ["--workdir", str(work), "--steps", "30", "--episodes", "2", "--results", str(results)]
    assert bc_reference.main(args) == 0
    recs = json.loads(results.read_text())["records"]
    evaluated = {p.stem for p in (work / "reports/evaluate").glob("*.json")} - {"source"}
    assert {r["method"] for r in recs} == evaluated and "redraw" in evaluated
    assert {r["target_data"] for r in recs} == {"correlated"}  # the smoke preset's: its key, beside the expert's
    for r in recs:  # each method's own returns on the first 2 test episodes, beside the same cloned policy's
        ev = json.loads((work / f"reports/evaluate/{r['method']}.json").read_text())
        assert r["policy"]["return_mean"] == pytest.approx(np.mean(ev["returns"][:2]))
        assert r["cloned"] == recs[0]["cloned"] and r["cloned"]["episodes"] == 2
    assert bc_reference.main([*args, "--top-fraction", "0.5"]) == 0  # filtered cloning: records of its own
    both = json.loads(results.read_text())["records"]
    assert sorted((r["reference"], r["method"]) for r in both) == sorted(
        (ref, m) for ref in ("bc", "bc_top50") for m in evaluated)
    assert (work / "reports/bc_reference_top50.json").is_file()
    kept = json.loads((work / "reports/bc_reference.json").read_text())
    # a kept result of other target data (a copied work dir whose data were replaced) is not reused
    (work / "reports/bc_reference.json").write_text(json.dumps({**kept, "target_data": "other", "returns": [-1.0] * 2}))
    assert bc_reference.main(args) == 0
    assert json.loads((work / "reports/bc_reference.json").read_text())["returns"] == kept["returns"]
    (work / "reports/bc_reference.json").unlink()  # the same seed: the same policy, the same returns
    assert bc_reference.main(args) == 0
    assert json.loads((work / "reports/bc_reference.json").read_text())["returns"] == kept["returns"]

    # data that validation rejected are never cloned from, and nothing is recorded
    verdict = json.loads((work / "reports/validation/result.json").read_text())
    (work / "reports/validation/result.json").write_text(json.dumps({**verdict, "success": False}))
    (work / "reports/bc_reference.json").unlink()
    before = results.read_text()
    with pytest.raises(SystemExit):
        bc_reference.main(args)
    assert f"{work / 'data/target'}: rejected by validation" in capsys.readouterr().err
    assert results.read_text() == before and not (work / "reports/bc_reference.json").exists()

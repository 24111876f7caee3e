"""The evaluation protocol: what the policy stage may look at, reproducible target data, and the
pipeline's record of what each stage depends on."""

import numpy as np
import torch

from test_agent import agent


class RecordingEnv:
    """Records the seed of every reset; each episode is one step long."""

    action_size = 1

    def __init__(self):
        self.seeds = []

    def reset(self, seed=None):
        self.seeds.append(seed)
        return {"state": np.zeros(3, np.float32)}

    def step(self, action):
        return {"state": np.zeros(3, np.float32)}, 0.0, True, False


def test_the_learning_curve_never_runs_the_final_evaluations_episodes():
    """train_policy's eval_every curve selects nothing on the test set: its episodes (initial
    states and action noise) are not those of the evaluate stage, for the same seed."""
    from redraw.agent.dreamer import AgentPolicy
    from redraw.stages.evaluate import run_policy
    from redraw.stages.train_policy import evaluate_in_target

    final, curve = RecordingEnv(), RecordingEnv()
    a = agent()
    run_policy(final, AgentPolicy(a), 20, seed=0, progress=False)
    evaluate_in_target(a, curve, 20, seed=0)
    assert len(set(final.seeds)) == len(set(curve.seeds)) == 20
    assert not set(final.seeds) & set(curve.seeds)
    again = RecordingEnv()
    evaluate_in_target(a, again, 20, seed=0)
    assert again.seeds == curve.seeds  # its own seeds, and still seeded


def save_agent(a, path, **identity):
    """Save agent ``a`` (for pendulum's proprio observations) as the training stages do."""
    from dataclasses import asdict

    from redraw.checkpoint import save_checkpoint

    ident = {"env": "pendulum-swingup-reversed", "obs_mode": "proprio", "obs_spec": {"state": [3]},
             "action_size": 1, "world_model": a.cfg.world_model, "exploration": a.cfg.exploration,
             "model": asdict(a.cfg.wm), "actor_critic": asdict(a.cfg.ac), **identity}
    save_checkpoint(path, {"agent": a.checkpoint_state()}, ident)
    return path


def save_policy(path):
    """A small (untrained) agent whose sampled actions vary from step to step."""
    a = agent()
    with torch.no_grad():
        a.ac.actor.net[-1].bias.fill_(0.0)
    return save_agent(a, path)


def test_expert_target_data_are_the_same_whatever_the_number_of_collection_workers(tmp_path):
    """collect.workers does not change the data (params.yaml, data/collect.py), also when a
    trained agent is the behaviour (the paper's expert data): each episode's actions come from
    its own seed, not from the episodes the same worker collected before it."""
    from redraw.data.behaviours import BehaviourConfig
    from redraw.data.collect import CollectConfig, collect
    from redraw.data.episodes import list_episodes, load_episode

    ckpt = str(save_policy(tmp_path / "expert.pt"))

    def run(name, workers, seed=7):
        collect(CollectConfig(env="pendulum-swingup-reversed", out_dir=str(tmp_path / name), obs_mode="proprio",
                              episodes=4, episode_steps=15, workers=workers, seed=seed,
                              behaviour=BehaviourConfig(kind="policy", checkpoint=ckpt)), progress=False)
        return [load_episode(f) for f in list_episodes(tmp_path / name)]

    one, two, other = run("one", 1), run("two", 2), run("other", 1, seed=8)
    for i, (a, b) in enumerate(zip(one, two)):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"episode {i}: {key}")
    assert not any(np.array_equal(a["action"], c["action"]) for a, c in zip(one, other))
    assert not np.array_equal(one[0]["action"], one[1]["action"])
    # which worker collects which episodes, in which order, is up to the pool (a worker that starts
    # first may take them all): a worker that collects them in another order makes the same files
    from redraw.data import collect as collect_module

    cfg = CollectConfig(env="pendulum-swingup-reversed", out_dir=str(tmp_path / "unused"), obs_mode="proprio",
                        episodes=4, episode_steps=15, workers=1, seed=7,
                        behaviour=BehaviourConfig(kind="policy", checkpoint=ckpt))
    (tmp_path / "shuffled").mkdir()
    collect_module._init_worker(cfg, str(tmp_path / "shuffled"))
    try:
        for index in (3, 1, 0, 2):
            collect_module._collect_one(index)
    finally:
        collect_module._close_worker()
    shuffled = [load_episode(f) for f in list_episodes(tmp_path / "shuffled")]
    for i, (a, b) in enumerate(zip(one, shuffled)):
        np.testing.assert_array_equal(a["action"], b["action"], err_msg=f"episode {i}")


def test_each_stage_depends_on_the_code_that_computes_its_outputs():
    """DVC reruns a stage only when a dep changes: code a stage runs but does not declare leaves
    stale results that look current."""
    from pathlib import Path

    import yaml

    stages = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]
    needs = {
        # eval_every's learning curve: the target env, the evaluation loop and its episodes
        "train_policy": ["src/redraw/envs", "src/redraw/stages/evaluate.py", "src/redraw/data/collect.py"],
        # the evaluation loop runs its episodes with data/collect.py's run_episode
        "evaluate": ["src/redraw/data/collect.py", "src/redraw/envs", "src/redraw/agent"],
        # the expert behind the paper's target data acts through the agent's code
        "collect_target": ["src/redraw/agent", "src/redraw/models", "src/redraw/data/behaviours.py"],
    }
    for stage, paths in needs.items():
        deps = stages[stage].get("do", stages[stage])["deps"]
        missing = [p for p in paths if p not in deps]
        assert not missing, f"dvc.yaml stage {stage} lacks deps {missing}"

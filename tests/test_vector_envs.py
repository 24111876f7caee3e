"""Envs stepped together (pretrain.envs): one batched policy call per step, and each episode the
same as it would be acted alone."""

import os
import subprocess
import sys

import numpy as np
import pytest

from redraw.agent.agent import AgentPolicy
from redraw.data.collect import run_episode, run_episodes
from test_agent import agent
from test_pretrain import make_workdir


class Drift:
    """A 3-dim toy env whose state follows the action; it ends after ``length`` steps (terminal
    when ``terminal``), so envs of one batch can end at different times."""

    action_size = 1

    def __init__(self, length: int, terminal: bool = False):
        self.length, self.terminal = length, terminal

    def reset(self, seed: int):
        self.t, self.x = 0, np.random.default_rng(seed).normal(size=3).astype(np.float32)
        return {"state": self.x.copy()}

    def step(self, action):
        self.t += 1
        self.x = (0.9 * self.x + float(np.asarray(action)[0])).astype(np.float32)
        done = self.t >= self.length
        return {"state": self.x.copy()}, float(self.x[0]), done, done and self.terminal


class Counting:
    """Wraps a policy and records how many episodes each batched call acted for."""

    def __init__(self, policy):
        self.policy, self.calls = policy, []

    def reset_batch(self, rngs):
        self.policy.reset_batch(rngs)

    def act_batch(self, obs, rows):
        self.calls.append(list(rows))
        return self.policy.act_batch(obs, rows)


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_each_episode_of_a_batch_is_the_episode_acted_alone_and_one_policy_call_serves_every_env():
    policy = AgentPolicy(agent(), sample=True)
    def seeds():  # fresh each time: spawning children advances a SeedSequence
        return [np.random.SeedSequence([0, 7, i]) for i in range(3)]

    counting = Counting(policy)
    together = run_episodes([Drift(12), Drift(5, terminal=True), Drift(9)], counting, seeds())
    alone = [run_episode(Drift(n, terminal=t), policy, s) for (n, t), s in zip([(12, False), (5, True), (9, False)], seeds())]
    for i, (a, b) in enumerate(zip(together, alone)):
        assert same(a, b), f"episode {i} differs from the one acted alone"
    assert [len(e["reward"]) for e in together] == [13, 6, 10]
    assert together[1]["is_terminal"][-1] and not together[0]["is_terminal"].any()
    assert len(counting.calls) == 12  # one call per step of the longest episode, not one per env and step
    assert counting.calls[0] == [0, 1, 2] and counting.calls[5] == [0, 2] and counting.calls[-1] == [0]
    # the same seeds give the same episodes again
    again = run_episodes([Drift(12), Drift(5, terminal=True), Drift(9)], policy, seeds())
    assert all(np.array_equal(a["action"], b["action"]) for a, b in zip(together, again))


def test_one_env_is_exactly_run_episode():
    policy = AgentPolicy(agent(), sample=True)
    (batched,) = run_episodes([Drift(20)], policy, [np.random.SeedSequence([3, 7, 0])])
    single = run_episode(Drift(20), policy, np.random.SeedSequence([3, 7, 0]))
    assert all(np.array_equal(batched[k], single[k]) for k in single)


class Pixels(Drift):
    """Drift with a 64x64 camera image (drawn from the state) beside a velocity vector."""

    def reset(self, seed: int):
        super().reset(seed)
        return self._obs()

    def step(self, action):
        _, reward, done, terminal = super().step(action)
        return self._obs(), reward, done, terminal

    def _obs(self):
        image = np.random.default_rng(abs(hash(self.x.tobytes())) % 2**32).integers(0, 256, (64, 64, 3), np.uint8)
        return {"image": image, "velocity": self.x[:2].copy()}


def test_row_by_row_computes_each_row_of_the_batch_as_a_batch_of_one_does():
    """policy.RowByRow: products and the transcendental elementwise functions of a batch give, row
    for row, what the same call on that row alone gives (PyTorch's CPU kernels compute the
    elements past the last pair of SIMD vectors with a scalar formula, and which those are
    depends on the tensor's size); tensors that are not the batch's, and functions of two
    tensors, are computed whole."""
    import torch
    from torch.nn import functional as F

    from redraw.agent.policy import RowByRow

    torch.manual_seed(0)
    x, w, other = torch.randn(5, 40), torch.randn(24, 40), torch.randn(3, 40)
    for f in (lambda t: F.linear(t, w), F.silu, torch.sigmoid, torch.tanh, torch.exp, F.softplus, torch.Tensor.exp):
        alone = torch.cat([f(x[i : i + 1]) for i in range(5)])
        with RowByRow(5):
            together, not_batch = f(x), f(other)
        assert torch.equal(together, alone)
        assert torch.equal(not_batch, f(other))  # 3 rows: not the batch's tensor
    whole = torch.pow(x.abs(), x)  # a function of two batch tensors: splitting the first alone would broadcast
    with RowByRow(5):
        assert torch.equal(torch.pow(x.abs(), x), whole)


@pytest.mark.parametrize("kind", ["draw", "rssm", "draw pixels"])
def test_an_evaluation_acted_together_is_bit_for_bit_the_one_acted_episode_by_episode(kind):
    """evaluate.envs only changes the speed: episodes acted N at a time (one batched policy call
    per step) give exactly the returns and actions of the episodes acted one by one, although a
    matrix product over N rows can round differently from N products of one row."""
    import torch

    from redraw.agent.actor_critic import ActorCriticConfig
    from redraw.agent.agent import Agent, AgentConfig
    from redraw.data.collect import run_policy
    from test_models import PIX, SPEC, tiny

    pixels = kind.endswith("pixels")
    torch.manual_seed(0)
    a = Agent(PIX if pixels else SPEC, 1, AgentConfig(world_model=kind.split()[0], wm=tiny(),
                                                      ac=ActorCriticConfig(units=16, horizon=4), bf16=False))
    env = (lambda: Pixels(7)) if pixels else (lambda: Drift(15))
    alone = run_policy(env(), AgentPolicy(a, sample=True), 5, seed=3, progress=False)
    together = run_policy([env() for _ in range(3)], AgentPolicy(a, sample=True), 5, seed=3, progress=False)
    assert together == alone  # floats compared exactly: returns and each episode's sum of |actions|
    assert len(alone[0]) == 5 and len(set(alone[1])) == 5


@pytest.mark.parametrize("value", [0, 2.5, True])
def test_a_bad_evaluate_envs_is_refused_naming_params_yaml_and_the_key(value):
    from redraw.config import ConfigError
    from redraw.stages.evaluate import evaluate_config

    with pytest.raises(ConfigError, match=rf"params.yaml: evaluate.envs must be a whole number of at least 1, got {value!r}"):
        evaluate_config({"evaluate": {"episodes": 10, "envs": value}})
    assert evaluate_config({"evaluate": {"episodes": 3, "envs": 1}}).envs == 1


def test_more_episodes_than_envs_is_refused():
    with pytest.raises(ValueError, match="2 episodes at once need 2 envs, got 1"):
        run_episodes([Drift(3)], AgentPolicy(agent()), [np.random.SeedSequence(i) for i in range(2)])


def pretrain_with_envs(path, envs: int, steps: int) -> subprocess.CompletedProcess:
    """The pretraining stage in a smoke work dir with ``pretrain.envs: envs``."""
    from redraw.config import _yaml, load_params

    make_workdir(path, steps=steps)
    params = load_params(path / "params.yaml", round_trip=True)
    params["pretrain"]["envs"] = envs
    with open(path / "params.yaml", "w") as fh:
        _yaml().dump(params, fh)
    return subprocess.run([sys.executable, "-m", "redraw.stages.pretrain", "--no-progress"], cwd=path,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def own_store(monkeypatch):
    """The stages track into the work dir's own MLflow store, whatever server an earlier test named."""
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)


@pytest.mark.slow
def test_pretraining_with_two_envs_collects_episodes_in_pairs_and_is_reproducible(tmp_path, own_store):
    runs = []
    for name in ("a", "b"):
        done = pretrain_with_envs(tmp_path / name, 2, 200)
        assert done.returncode == 0, done.stdout + done.stderr
        runs.append(tmp_path / name)
    import json

    a, b = (json.loads((p / "reports/pretrain.json").read_text()) for p in runs)
    assert a["train/steps"] == 200 and a["train/updates"] == 100
    assert {k: v for k, v in a.items() if k.startswith("loss/")} == {k: v for k, v in b.items() if k.startswith("loss/")}
    replay = sorted(runs[0].glob("checkpoints/*/replay/*.npz"))
    assert len(replay) == 4  # two rounds of two 50-step episodes


def test_pretrain_envs_below_one_is_refused_naming_params_yaml(tmp_path, own_store):
    done = pretrain_with_envs(tmp_path / "w", 0, 100)
    assert done.returncode != 0 and "params.yaml: pretrain.envs must be at least 1, got 0" in done.stdout + done.stderr

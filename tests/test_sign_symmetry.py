"""Sign symmetry of the whole collection -> replay -> update path (docs/sign_symmetry.md).

reacher-easy-reversed only negates the actions, so a training there is the mirror image of one in
reacher-easy: episodes collected with a behaviour in the source and with its mirror (every action
negated) in the target are the same observations and rewards; the replay samples the same chunks;
and an agent whose weights that multiply the action are negated (``mirror_``) learns on the target
batch exactly what the original learns on the source batch, provided its action noise is negated
too. Every comparison here is exact (``torch.equal``): -w * -a is w * a in floating point.

What is *not* mirrored between the ``pretrain`` and ``oracle`` stages of one seed is what the
tests below name: the start data (another seed stream), the initial weights (the same in the
agent's own frame, not mirrored) and every action noise draw (the same draws, not negated).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import redraw.agent.agent as dreamer
import redraw.data.collect as collect_mod
from redraw.agent.actor_critic import ActorCriticConfig, ImaginationPolicy
from redraw.agent.agent import Agent, AgentConfig
from redraw.agent.policy import PolicyStep
from redraw.data.behaviours import BehaviourConfig
from redraw.data.collect import CollectConfig, collect, episode_seed
from redraw.data.episodes import iter_episodes
from redraw.data.replay import Replay, batch_keys
from redraw.envs import make_env
from redraw.models.base import WorldModelConfig
from redraw.perf import PerfConfig

SOURCE, TARGET = "reacher-easy", "reacher-easy-reversed"
STEPS = 50  #: agent steps per episode (the smoke preset's)
EPISODES = 3
ENV = dict(obs_mode="proprio", episode_steps=STEPS)


# -- the mirror ---------------------------------------------------------------------------------
class Mirrored:
    """A behaviour's mirror image: the same random draws, every action negated."""

    def __init__(self, inner):
        self.inner = inner

    def reset(self, rng) -> None:
        self.inner.reset(rng)

    def act(self, obs) -> np.ndarray:
        return -self.inner.act(obs)


def action_slices(agent: Agent) -> dict[str, tuple]:
    """Every agent weight that multiplies the action input (or makes the actor's mean) and the
    index of the part that does: negating these mirrors the agent."""
    A, F = agent.action_size, agent.wm.feat_dim
    out = {"wm.prior.0.weight": (slice(None), slice(0, A))}  # DRAW's prior sees [action, belief, z]
    actors = [("ac", agent.ac)] + ([("explorer", agent.explorer)] if agent.explorer is not None else [])
    for name, ac in actors:  # the actor's last layer: [mean (A), std (A)] before tanh / sigmoid
        last = len(ac.actor.net) - 1
        out[f"{name}.actor.net.{last}.weight"] = (slice(0, A),)
        out[f"{name}.actor.net.{last}.bias"] = (slice(0, A),)
    if agent.explorer is not None:  # Plan2Explore's heads see [features, action]
        for i in range(len(agent.disagreement.heads)):
            out[f"disagreement.heads.{i}.0.weight"] = (slice(None), slice(F, F + A))
    return out


def mirrored_state(agent: Agent) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in agent.state_dict().items()}
    for name, index in action_slices(agent).items():
        state[name][index] = -state[name][index]
    return state


def mirror_(agent: Agent) -> Agent:
    agent.load_state_dict(mirrored_state(agent))
    return agent


class NegatedNoise(ImaginationPolicy):
    """Imagination's policy with every N(0, 1) draw negated: the mirror of the same draws."""

    def sample(self, z, noise):
        return super().sample(z, -noise)


# -- data ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """Random-behaviour episodes in the source, and the mirrored behaviour's in the target (same
    seed and stream), through ``collect`` and back from disk."""
    root = tmp_path_factory.mktemp("sign")
    real = collect_mod.make_behaviour
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        for env, mirrored in ((SOURCE, False), (TARGET, True)):
            if mirrored:
                mp.setattr(collect_mod, "make_behaviour", lambda *a, **k: Mirrored(real(*a, **k)))
            cfg = CollectConfig(env=env, out_dir=str(root / env), episodes=EPISODES, seed=3, stream=0,
                                behaviour=BehaviourConfig(kind="random"), workers=1, episode_steps=STEPS)
            collect(cfg, progress=False)
            out[env] = [episode for _, episode in iter_episodes(cfg.out_dir)]
    return out


def test_mirrored_behaviour_in_the_reversed_target_collects_the_source_episodes(collected):
    for src, tgt in zip(collected[SOURCE], collected[TARGET], strict=True):
        assert set(src) == set(tgt)
        for key in src:
            if key == "action":
                np.testing.assert_array_equal(tgt[key], -src[key])
                assert np.abs(src[key][1:]).min() > 0  # real actions, not zeros that hide a sign
            else:
                np.testing.assert_array_equal(tgt[key], src[key], err_msg=key)


def test_correlated_noise_mirrors_too():
    """The correlated behaviour (clipped AR(1) noise, symmetric bounds) mirrored step by step."""
    from redraw.data.behaviours import make_behaviour

    rows = []
    for env_name, sign in ((SOURCE, 1), (TARGET, -1)):
        with make_env(env_name, seed=0, **ENV) as env:
            behaviour = make_behaviour(BehaviourConfig(kind="correlated", rho=0.9, scale=1.5),
                                       env.action_low, env.action_high)
            behaviour = behaviour if sign == 1 else Mirrored(behaviour)
            rows.append(collect_mod.run_episode(env, behaviour, episode_seed(0, 1, 4)))
    src, tgt = rows
    assert (np.abs(src["action"]) == 1).any()  # some actions clipped at the bounds
    np.testing.assert_array_equal(tgt["action"], -src["action"])
    np.testing.assert_array_equal(tgt["state"], src["state"])
    np.testing.assert_array_equal(tgt["reward"], src["reward"])


def replays(collected, seed: int = 5, length: int = 16) -> tuple[Replay, Replay]:
    keys = batch_keys({"state": None})
    out = []
    for env in (SOURCE, TARGET):
        replay = Replay(keys, length, seed=seed)
        for episode in collected[env]:
            replay.add(episode)
        out.append(replay)
    return tuple(out)


def test_replay_samples_the_same_chunks_from_both(collected):
    src, tgt = replays(collected)
    for _ in range(5):
        a, b = src.sample(4, with_episode=True), tgt.sample(4, with_episode=True)
        assert torch.equal(a["episode"], b["episode"])
        for key in a:
            if key == "action":
                assert torch.equal(b[key], -a[key])
            else:
                assert torch.equal(b[key], a[key]), key


# -- the agent ----------------------------------------------------------------------------------
def smoke_agent(action_size: int, exploration: str, fused: bool) -> Agent:
    """The smoke preset's sizes, fp32, eager; the same seed for every call."""
    wm = WorldModelConfig(latent_vars=8, deter=16, hidden=32, cnn_depth=4, mlp_units=32, mlp_layers=1,
                          head_units=32, obs_norm=True)
    cfg = AgentConfig(wm=wm, ac=ActorCriticConfig(units=32, horizon=8), bf16=False, imag_starts=32,
                      exploration=exploration, disagreement_heads=3)
    torch.manual_seed(0)
    agent = Agent({"state": ((6,), "float32")}, action_size, cfg)
    agent.use_perf(PerfConfig(compile=False, fused_chain=fused, fused_adam=fused))
    agent.seed(0)
    return agent


def pair(collected, exploration: str = "task", fused: bool = True) -> tuple[Agent, Agent]:
    from redraw.stages.pretrain import fit_obs_scale

    agents = []
    for env in (SOURCE, TARGET):
        agent = smoke_agent(2, exploration, fused)
        fit_obs_scale(agent, [(env, episode) for episode in collected[env]])  # the same observations
        agents.append(agent)
    return agents[0], mirror_(agents[1])


def assert_mirrored(original: Agent, mirror: Agent) -> None:
    expect, got = mirrored_state(original), mirror.state_dict()
    assert set(expect) == set(got)
    for name in expect:
        assert torch.equal(got[name], expect[name]), name


@pytest.mark.parametrize("exploration,fused", [("task", True), ("task", False), ("plan2explore", True)])
def test_a_mirrored_agent_on_the_target_batch_learns_the_mirror_of_the_source_update(
        collected, monkeypatch, exploration, fused):
    """World model, actor-critic and (plan2explore) the disagreement ensemble and the explorer:
    the same losses and mirrored weights after every update, bit for bit, when the mirror's
    imagination negates its action noise. Fused and step-by-step prior chain and Adam alike."""
    src_replay, tgt_replay = replays(collected)
    agent, mirror = pair(collected, exploration, fused)
    assert_mirrored(agent, mirror)
    for _ in range(3):
        m_src = agent.train_step(src_replay.sample(4))
        with monkeypatch.context() as mp:
            mp.setattr(dreamer, "ImaginationPolicy", NegatedNoise)
            m_tgt = mirror.train_step(tgt_replay.sample(4))
        assert m_src == m_tgt
        assert_mirrored(agent, mirror)  # after a step that used Adam's state: that is mirrored too
    if exploration == "plan2explore":
        assert "loss/disagreement" in m_src and "loss/explore_actor" in m_src


def test_the_check_sees_an_asymmetry(collected, monkeypatch):
    """A one-sided clip of the action the prior sees (an asymmetry a refactor could bring in)
    breaks the mirror at the first update: the check above can fail."""
    import redraw.models.draw as draw

    prior_logits = draw.DRAW.prior_logits
    monkeypatch.setattr(draw.DRAW, "prior_logits", lambda self, a, prev: prior_logits(self, a.clamp(-1, 0.9), prev))
    src_replay, tgt_replay = replays(collected)
    agent, mirror = pair(collected, fused=False)  # the step-by-step chain calls prior_logits
    m_src = agent.train_step(src_replay.sample(4))
    monkeypatch.setattr(dreamer, "ImaginationPolicy", NegatedNoise)
    assert mirror.train_step(tgt_replay.sample(4)) != m_src


def test_with_the_same_noise_draws_only_the_world_model_update_is_mirrored(collected):
    """What the two trainings of one seed really do: the same N(0, 1) draws, not negated. The
    world-model update (no action noise in it) is still the mirror image; the imagined actions
    (mean + std * noise against -mean + std * noise) and so the actor-critic update are not."""
    src_replay, tgt_replay = replays(collected)
    agent, mirror = pair(collected)
    m_src, m_tgt = agent.train_step(src_replay.sample(4)), mirror.train_step(tgt_replay.sample(4))
    wm_keys = [k for k in m_src if k.startswith(("loss/", "wm/", "grad/wm")) and k not in ("loss/actor", "loss/critic")]
    assert {k: m_src[k] for k in wm_keys} == {k: m_tgt[k] for k in wm_keys}
    expect, got = mirrored_state(agent), mirror.state_dict()
    assert all(torch.equal(got[k], expect[k]) for k in expect if k.startswith("wm."))
    assert m_src["loss/actor"] != m_tgt["loss/actor"]
    assert not all(torch.equal(got[k], expect[k]) for k in expect if k.startswith("ac.actor."))


def test_the_actor_distribution_is_symmetric_under_the_mirror():
    """Mean negated, std the same; log-probability and entropy of -a under the mirror those of a
    under the original (also outside [-1, 1], where imagination's raw samples go); clipping
    commutes with the negation."""
    agent = smoke_agent(2, "task", True)
    mirror = mirror_(smoke_agent(2, "task", True))
    z = torch.nn.functional.one_hot(torch.randint(0, 4, (64, 8), generator=torch.Generator().manual_seed(1)), 4)
    z = z.float().flatten(1)
    mean, std = agent.ac.actor.mean_std(z)
    m_mean, m_std = mirror.ac.actor.mean_std(z)
    assert torch.equal(m_mean, -mean) and torch.equal(m_std, std)
    a = mean + 1.7 * std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(2))
    assert (a.abs() > 1).any()
    d, m_d = agent.ac.actor.dist(z), mirror.ac.actor.dist(z)
    assert torch.equal(m_d.log_prob(-a), d.log_prob(a))
    assert torch.equal(m_d.entropy(), d.entropy())
    noise = 3 * torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    for clip in (False, True):
        sample = ImaginationPolicy(agent.ac.actor, 2, clip=clip).sample(z, noise)
        assert torch.equal(ImaginationPolicy(mirror.ac.actor, 2, clip=clip).sample(z, -noise), -sample)
        if clip:
            assert (sample.abs() == 1).any()


@torch.no_grad()
def test_acting_mirrored_in_the_reversed_target_reproduces_the_source_episode():
    """The deployable policy step (what online collection and evaluation call) of an agent in the
    source and of its mirror, with negated noise, in the target: the same latent states and
    observations, negated actions, the same rewards, step for step."""
    agent = smoke_agent(2, "task", True)
    mirror = mirror_(smoke_agent(2, "task", True))
    steps = (PolicyStep(agent), PolicyStep(mirror))
    gen = torch.Generator().manual_seed(4)
    with make_env(SOURCE, seed=1, **ENV) as src_env, make_env(TARGET, seed=1, **ENV) as tgt_env:
        obs = [src_env.reset(seed=11), tgt_env.reset(seed=11)]
        latent = [torch.zeros(1, steps[0].latent_size)] * 2
        prev = [torch.zeros(1, 2)] * 2
        done, first, actions = False, torch.ones(1), []
        while not done:
            uniform, noise = torch.rand((1, steps[0].S), generator=gen), torch.randn((1, 2), generator=gen)
            outs = [step(torch.as_tensor(o["state"])[None], lat, p, first, uniform, sign * noise)
                    for step, o, lat, p, sign in zip(steps, obs, latent, prev, (1, -1))]
            (a_src, latent[0]), (a_tgt, latent[1]) = outs
            assert torch.equal(a_tgt, -a_src) and torch.equal(latent[1], latent[0])
            prev, first = [a_src, a_tgt], torch.zeros(1)
            o_src, r_src, done, _ = src_env.step(a_src[0].numpy())
            o_tgt, r_tgt, _, _ = tgt_env.step(a_tgt[0].numpy())
            np.testing.assert_array_equal(o_tgt["state"], o_src["state"])
            assert r_tgt == r_src
            obs = [o_src, o_tgt]
            actions.append(a_src[0].numpy())
    assert len(actions) == STEPS and np.abs(np.asarray(actions)).min() > 0


def test_the_oracle_start_data_are_other_episodes_not_the_mirrored_source_ones():
    """collect_oracle runs collect_source's behaviour and size in the target, on seed stream 2
    (collect_source: 0): other initial states and other action draws, not the source's episodes
    mirrored. So the pretrain and oracle trainings of one seed start from different data."""
    from redraw.stages.collect import config_from_params

    params = {"seed": 0, "env": {"source": SOURCE, "target": TARGET, "obs_mode": "proprio", "action_repeat": 2,
                                 "episode_steps": STEPS, "image_size": 64, "antialias": False},
              "collect_source": {"episodes": 1, "behaviour": {"kind": "random"}}, "collect": {"workers": 1}}
    source, oracle = config_from_params("source", params), config_from_params("oracle", params)
    assert (source.env, oracle.env) == (SOURCE, TARGET)
    assert source.behaviour == oracle.behaviour and source.seed == oracle.seed
    assert source.stream != oracle.stream
    with make_env(SOURCE, seed=0, **ENV) as env:
        starts = [env.reset(seed=int(episode_seed(0, cfg.stream, 0).spawn(2)[0].generate_state(1)[0]))["state"]
                  for cfg in (source, oracle)]
    assert not np.array_equal(starts[0], starts[1])

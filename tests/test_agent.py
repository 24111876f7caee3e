"""The agent: a training step moves what it should; Plan2Explore's reward is ensemble disagreement."""

import copy

import numpy as np
import pytest
import torch

from redraw.agent.actor_critic import ActorCriticConfig
from redraw.agent.agent import Agent, AgentConfig, AgentPolicy
from redraw.agent.plan2explore import Disagreement
from redraw.data.replay import Replay
from test_models import SPEC, batch_for, tiny


def agent(**kw):
    torch.manual_seed(0)
    a = Agent(SPEC, 1, AgentConfig(wm=tiny(), ac=ActorCriticConfig(units=16, horizon=4), bf16=False, **kw))
    a.seed(0)
    return a


def changed(before, after, prefix):
    return any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix))


@pytest.mark.parametrize("world_model", ["draw", "rssm"])
def test_train_step_updates_world_model_actor_and_critic(world_model):
    a = agent(world_model=world_model)
    before = copy.deepcopy(a.state_dict())
    metrics = a.train_step(batch_for(SPEC, B=2, T=6))
    after = a.state_dict()
    for prefix in ("wm.", "ac.actor.", "ac.critic."):
        assert changed(before, after, prefix), prefix
    assert a.updates == 1 and all(np.isfinite(v) for v in metrics.values())


def test_plan2explore_trains_an_explorer_on_disagreement_beside_the_task_actor():
    a = agent(exploration="plan2explore", disagreement_heads=3)
    before = copy.deepcopy(a.state_dict())
    metrics = a.train_step(batch_for(SPEC, B=2, T=6))
    after = a.state_dict()
    for prefix in ("explorer.actor.", "disagreement.", "ac.actor."):
        assert changed(before, after, prefix), prefix
    assert "loss/disagreement" in metrics and "loss/explore_actor" in metrics
    policy = AgentPolicy(a, explore=True)
    policy.reset()
    assert policy.act({"state": np.zeros(3, np.float32)}).shape == (1,)
    restored = agent(exploration="plan2explore", disagreement_heads=3)
    restored.load_checkpoint_state(a.checkpoint_state())
    for k, v in a.state_dict().items():
        assert torch.equal(v, restored.state_dict()[k]), k


def test_disagreement_is_the_variance_across_heads_and_learns():
    d = Disagreement(4, 1, 2, heads=5, units=16, layers=1, lr=1e-2)
    feat, action = torch.randn(64, 4), torch.randn(64, 1)
    preds = d.predict(feat, action)
    torch.testing.assert_close(d.reward(feat, action), preds.var(0).mean(-1))
    target = feat[:, :2] * 2
    first = d.update(feat, action, target)["loss/disagreement"]
    for _ in range(200):
        last = d.update(feat, action, target)["loss/disagreement"]
    assert last < 0.2 * first


def test_replay_chunks_start_episodes_and_are_seeded():
    ep = {"state": np.arange(30, dtype=np.float32)[:, None].repeat(3, 1), "action": np.zeros((30, 1), np.float32),
          "reward": np.zeros(30, np.float32), "is_first": np.arange(30) == 0, "is_terminal": np.zeros(30, bool)}
    r1, r2 = Replay(list(ep), 8, seed=1), Replay(list(ep), 8, seed=1)
    r1.add(ep), r2.add(ep)
    r1.add({k: v[:5] for k, v in ep.items()})  # shorter than a chunk: skipped
    assert len(r1) == 1 and r1.transitions == 29
    b1, b2 = r1.sample(4), r2.sample(4)
    for k in b1:
        assert torch.equal(b1[k], b2[k])
    assert b1["state"].shape == (4, 8, 3) and b1["is_first"][:, 0].all()
    assert torch.all(b1["state"][:, 1:, 0] - b1["state"][:, :-1, 0] == 1)  # contiguous rows


def test_reinforce_keeps_the_std_when_every_action_is_as_good():
    # every action earns the same reward, so the actor's expected gradient is zero; the advantages
    # are positive while the critic learns the values. Scoring clipped actions instead of the
    # samples drew drove the std down (0.87 -> 0.64 in this setting), ending exploration.
    from redraw.agent.actor_critic import ActorCritic

    torch.manual_seed(0)
    ac = ActorCritic(16, 1, ActorCriticConfig(units=32, layers=1, horizon=8, lr=1e-3))
    g = torch.Generator().manual_seed(1)
    z = torch.randn(9, 64, 16, generator=g)
    std_before = ac.actor.mean_std(z)[1].mean().item()
    clipped_share = []
    for _ in range(100):
        with torch.no_grad():
            action = ac.actor.act(z[:-1], generator=g, clip=False)
        clipped_share.append(float((action.abs() > 1).float().mean()))
        ac.update({"feat": z, "action": action, "reward": torch.ones(8, 64), "cont": torch.ones(8, 64)})
    assert np.mean(clipped_share) > 0.1  # the case that matters: many samples fall outside [-1, 1]
    assert abs(ac.actor.mean_std(z)[1].mean().item() - std_before) < 0.05


@pytest.mark.parametrize("world_model", ["draw", "rssm"])
def test_imagination_trains_on_the_actors_samples_and_the_dynamics_clip_them(world_model, monkeypatch):
    a = agent(world_model=world_model)
    with torch.no_grad():
        a.ac.actor.net[-1].bias.fill_(0.0)
        a.ac.actor.net[-1].bias[0] = 3.0  # mean tanh(3) ~ 1: about half the samples exceed 1
    seen = {}
    imagine = a.wm.imagine

    def spy(policy, start, horizon, generator=None):
        seen["traj"] = imagine(policy, start, horizon, generator)
        return seen["traj"]

    monkeypatch.setattr(a.wm, "imagine", spy)
    a.policy_step(batch_for(SPEC, B=2, T=6))
    assert seen["traj"]["action"].max() > 1.0
    start = type(a.wm.initial((3,)))(*(x.detach() for x in a.wm.initial((3,))))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    beyond = torch.full((3, 1), 1.7)
    torch.testing.assert_close(a.wm.step(start, beyond, g1)[1], a.wm.step(start, beyond.clamp(-1, 1), g2)[1])


@pytest.mark.parametrize("imag_clip", [False, True])
def test_imag_clip_clips_the_imagined_actions_that_reinforce_scores(imag_clip, monkeypatch, tmp_path):
    a = agent(imag_clip=imag_clip)
    with torch.no_grad():
        a.ac.actor.net[-1].bias.fill_(0.0)
        a.ac.actor.net[-1].bias[0] = 3.0  # about half the samples exceed 1
    seen = []
    imagine = a.wm.imagine
    monkeypatch.setattr(a.wm, "imagine", lambda *args, **kw: seen.append(imagine(*args, **kw)) or seen[-1])
    a.train_step(batch_for(SPEC, B=2, T=6))
    assert (seen[0]["action"].abs().max() <= 1.0) == imag_clip
    # a checkpoint does not carry the setting: the policy stage's agent, loaded from a model
    # pretrained with imag_clip, scores the raw samples
    from test_protocol import save_agent

    from redraw.stages.train_policy import policy_stage_agent

    loaded = policy_stage_agent(save_agent(a, tmp_path / "agent.pt"), reinit=False, lr=0.0, imag_starts=0, seed=0)
    with torch.no_grad():
        loaded.ac.actor.net[-1].bias.fill_(0.0)
        loaded.ac.actor.net[-1].bias[0] = 3.0
    seen.clear()
    monkeypatch.setattr(loaded.wm, "imagine", lambda *args, **kw: seen.append(imagine(*args, **kw)) or seen[-1])
    loaded.policy_step(batch_for(SPEC, B=2, T=6))
    assert seen[0]["action"].abs().max() > 1.0


def test_a_gpu_trained_checkpoint_loads_on_the_cpu_keeping_the_cpu_generator():
    """A CUDA generator's state (a seed and an offset) cannot drive a CPU generator: a policy
    trained on a GPU and loaded on a CPU (collection, evaluation, deployment) keeps its own
    generator; on the device kind that saved it the generator resumes exactly."""
    a = agent()
    state = a.checkpoint_state()
    assert state["generator_device"] == "cpu"
    gpu_state = dict(state, generator=torch.zeros(16, dtype=torch.uint8), generator_device="cuda")
    cpu = agent()
    cpu.seed(7)
    expected = torch.Generator().manual_seed(7).get_state()
    cpu.load_checkpoint_state(gpu_state)
    assert torch.equal(cpu.generator.get_state(), expected)
    for name, value in cpu.state_dict().items():
        assert torch.equal(value, a.state_dict()[name]), name
    a.generator.manual_seed(3)
    resumed = agent()
    resumed.load_checkpoint_state(a.checkpoint_state())
    assert torch.equal(resumed.generator.get_state(), a.generator.get_state())


def test_returns_and_advantages_bootstrap_from_the_critic_and_the_slow_critic_only_regularises():
    """DreamerV3 (``slowtar: False``): the lambda-returns and the actor's baseline use the critic
    itself; the slow EMA copy is only the target of the critic's regulariser."""
    from redraw.agent.actor_critic import ActorCritic
    from redraw.agent.returns import lambda_returns
    from redraw.models.dists import twohot_loss

    torch.manual_seed(0)
    cfg = ActorCriticConfig(units=32, layers=1, horizon=6, lr=1e-3)
    ac = ActorCritic(16, 1, cfg)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # a critic and a slow critic that predict clearly different values
        for p in ac.critic.parameters():
            p.normal_(0.0, 0.3, generator=g)
        for p in ac.slow_critic.parameters():
            p.normal_(0.0, 0.3, generator=g)
    z = torch.randn(7, 32, 16, generator=g)
    action = torch.rand(6, 32, 1, generator=g) * 2 - 1
    reward, cont = torch.rand(6, 32, generator=g), torch.ones(6, 32)
    with torch.no_grad():
        value, slow = ac.value(z), ac.value(z, slow=True)
        assert (value - slow).abs().mean() > 0.5  # the test can tell the two apart
        ret = lambda_returns(reward, cont, value, cfg.discount, cfg.lam)
        weight = torch.cumprod(torch.cat([torch.ones_like(cont[:1]), cont[:-1]]) * cfg.discount, 0) / cfg.discount
        scale = max(1.0, float(torch.quantile(ret.flatten(), 0.95) - torch.quantile(ret.flatten(), 0.05)))
        dist = ac.actor.dist(z[:-1])
        adv = (ret - value[:-1]) / scale
        actor_loss = -(weight * (dist.log_prob(action).sum(-1) * adv + cfg.entropy * dist.entropy().sum(-1))).mean()
        logits = ac.critic(z[:-1])
        critic_loss = (weight * (twohot_loss(logits, ret, ac.bins) + twohot_loss(logits, slow[:-1], ac.bins))).mean()
    metrics = ac.update({"feat": z, "action": action, "reward": reward, "cont": cont})
    torch.testing.assert_close(metrics["ac/return"], ret.mean())
    torch.testing.assert_close(metrics["loss/actor"], actor_loss)
    torch.testing.assert_close(metrics["loss/critic"], critic_loss)


def test_return_scale_has_a_floor_of_1_for_the_task_and_001_for_the_plan2explore_explorer():
    """Disagreement rewards are small: with the task's floor of 1 the explorer's advantages would
    hardly move it. The reference's Plan2Explore setting (``retnorm.max 100``) floors at 0.01."""
    from redraw.agent.returns import PercentileNormalizer

    small = torch.linspace(0.0, 0.1, 101)  # P95 - P5 = 0.09
    torch.testing.assert_close(PercentileNormalizer(floor=1.0).update(small), torch.tensor(1.0))
    torch.testing.assert_close(PercentileNormalizer(floor=0.01).update(small), torch.tensor(0.09))
    torch.testing.assert_close(PercentileNormalizer(floor=0.01).update(small * 0.01), torch.tensor(0.01))
    a = agent(exploration="plan2explore", disagreement_heads=2)
    assert a.ac.retnorm.floor == 1.0 and a.explorer.retnorm.floor == 0.01
    metrics = a.train_step(batch_for(SPEC, B=2, T=6))
    assert metrics["ac/explore_return_scale"] < 1.0  # the explorer's own, unfloored by the task's 1
    custom = Agent(SPEC, 1, AgentConfig(wm=tiny(), exploration="plan2explore", disagreement_heads=2, bf16=False,
                                        ac=ActorCriticConfig(units=16, horizon=4, retnorm_floor=2.0,
                                                             explore_retnorm_floor=0.5)))
    assert custom.ac.retnorm.floor == 2.0 and custom.explorer.retnorm.floor == 0.5


def test_the_backprop_actor_loss_computes_gradients_for_the_actor_only():
    """DreamerV3's actor gradient runs through the imagined dynamics to the actions; the weights
    of the model it passes through (here ``dynamics``) get no gradient from it."""
    from redraw.agent.actor_critic import ActorCritic

    torch.manual_seed(0)
    ac = ActorCritic(4, 1, ActorCriticConfig(units=16, horizon=3, actor_grad="backprop"))
    dynamics = torch.nn.Parameter(torch.randn(4, 4) * 0.5)
    feats, actions = [torch.randn(8, 4)], []
    for _ in range(3):
        action = ac.actor.mean_std(feats[-1])[0]
        actions.append(action)
        feats.append(torch.tanh(feats[-1] @ dynamics + action))
    feat = torch.stack(feats)
    traj = {"feat": feat, "action": torch.stack(actions), "reward": feat[1:].sum(-1), "cont": torch.ones(3, 8)}
    before = copy.deepcopy(ac.actor.state_dict())
    ac.update(traj)
    assert dynamics.grad is None
    assert changed(before, ac.actor.state_dict(), "")

"""The DreamerV3 baseline's RSSM: a LayerNorm GRU, imagination the actor can backpropagate
through, and the pretraining settings that make it DreamerV3's rather than DRAW's."""

from pathlib import Path

import pytest
import torch

from redraw.models.rssm import RSSM, LayerNormGRU
from test_models import SPEC, tiny

ROOT = Path(__file__).resolve().parents[1]


def test_layernorm_gru_against_the_dreamerv3_gates():
    """deter' = u * tanh(r * c) + (1 - u) * deter, with [r, c, u] = LayerNorm(W [deter, x]) and
    u = sigmoid(. - 1): one linear map on the concatenation, normalised, then the gates."""
    torch.manual_seed(0)
    gru = LayerNormGRU(5, 6)
    with torch.no_grad():
        for p in gru.norm.parameters():
            p.normal_()
    x, h = torch.randn(4, 5), torch.randn(4, 6)
    W = gru.linear.weight
    assert gru.linear.bias is None and W.shape == (18, 11)
    parts = torch.nn.functional.layer_norm(torch.cat([h, x], -1) @ W.T, (18,), gru.norm.weight, gru.norm.bias)
    r, c, u = parts[:, :6], parts[:, 6:12], parts[:, 12:]
    r, u = torch.sigmoid(r), torch.sigmoid(u - 1)
    torch.testing.assert_close(gru(x, h), u * torch.tanh(r * c) + (1 - u) * h)


def test_rssm_uses_the_layernorm_gru():
    wm = RSSM(SPEC, 1, tiny())
    assert isinstance(wm.gru, LayerNormGRU) and not isinstance(wm.gru, torch.nn.GRUCell)


def test_rssm_imagination_passes_gradients_from_rewards_to_the_actions():
    """Straight-through samples: the reward of step t+1 has a gradient with respect to the action
    of step t (DreamerV3 trains a continuous actor through the imagined dynamics)."""
    torch.manual_seed(0)
    wm = RSSM(SPEC, 1, tiny())
    with torch.no_grad():
        torch.nn.init.normal_(wm.reward_head[-1].weight)  # a reward head that reads the state
    wm.requires_grad_(False)  # the frozen world model of the policy stage still passes gradients
    start = wm.initial((3,))
    actions = []

    def policy(feat):
        a = torch.zeros(feat.shape[0], 1, requires_grad=True)
        actions.append(a)
        return a

    traj = wm.imagine(policy, start, 4, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(traj["reward"][1:].sum(), actions[:-1])
    assert all(g.abs().sum() > 0 for g in grads)
    # forward values are the one-hot samples themselves
    z = traj["feat"][1:, :, wm.cfg.deter:].reshape(4, 3, wm.cfg.latent_vars, wm.cfg.latent_classes)
    assert torch.equal(z.sum(-1), torch.ones_like(z.sum(-1))) and set(z.unique().tolist()) <= {0.0, 1.0}


def toy_trajectory(actor, z, noise, target=0.5):
    """A differentiable stand-in for imagination: fixed features, reward -(a - target)^2."""
    mean, std = actor.mean_std(z[:-1])
    action = mean + std * noise
    return {"feat": z, "action": action, "reward": -((action.squeeze(-1) - target) ** 2),
            "cont": torch.ones(action.shape[:2])}


def test_backprop_actor_loss_is_the_normalised_advantage_differentiated_through_the_trajectory():
    import copy

    from redraw.agent.actor_critic import ActorCritic, ActorCriticConfig
    from redraw.agent.returns import lambda_returns
    from redraw.models.dists import twohot_loss, twohot_mean

    torch.manual_seed(0)
    cfg = ActorCriticConfig(units=32, layers=1, horizon=5, actor_grad="backprop")
    ac = ActorCritic(4, 1, cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in ac.critic.parameters():
            p.normal_(0.0, 0.2, generator=g)
    z, noise = torch.randn(6, 16, 4, generator=g), torch.randn(5, 16, 1, generator=g)
    hand = copy.deepcopy(ac)
    traj = toy_trajectory(hand.actor, z, noise)
    value = twohot_mean(hand.critic(z), hand.bins)
    ret = lambda_returns(traj["reward"], traj["cont"], value, cfg.discount, cfg.lam)
    scale = max(1.0, float(torch.quantile(ret.detach().flatten(), 0.95) - torch.quantile(ret.detach().flatten(), 0.05)))
    weight = cfg.discount ** torch.arange(5.0)[:, None]
    entropy = hand.actor.dist(z[:-1]).entropy().sum(-1)
    loss = -(weight * ((ret - value[:-1]) / scale + cfg.entropy * entropy)).mean()
    loss.backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in hand.actor.parameters()]))
    # the critic: two-hot loss on constant features towards the returns and the slow critic's values
    hand.critic.zero_grad()
    with torch.no_grad():
        slow = twohot_mean(hand.slow_critic(z), hand.bins)
    logits = hand.critic(z[:-1])
    critic_loss = (weight * (twohot_loss(logits, ret.detach(), hand.bins) + twohot_loss(logits, slow[:-1], hand.bins))).mean()
    critic_loss.backward()
    critic_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in hand.critic.parameters()]))
    metrics = ac.update(toy_trajectory(ac.actor, z, noise))
    torch.testing.assert_close(metrics["loss/actor"], loss.detach())
    torch.testing.assert_close(metrics["grad/actor"], norm)
    torch.testing.assert_close(metrics["loss/critic"], critic_loss.detach())
    torch.testing.assert_close(metrics["grad/critic"], critic_norm)
    torch.testing.assert_close(metrics["ac/entropy"], entropy.mean().detach())


def test_an_rssm_agents_backprop_actor_learns_through_its_imagination():
    """With no entropy bonus a backprop actor's only gradient comes through the imagined
    trajectory: the agent's RSSM imagination (under autocast, from detached posterior states,
    with the world model frozen as in the policy stage) must keep that graph."""
    from redraw.agent.actor_critic import ActorCriticConfig
    from redraw.agent.agent import Agent, AgentConfig
    from test_models import batch_for

    torch.manual_seed(0)
    a = Agent(SPEC, 1, AgentConfig(world_model="rssm", wm=tiny(), bf16=True,
                                   ac=ActorCriticConfig(units=16, horizon=4, entropy=0.0, actor_grad="backprop")))
    with torch.no_grad():
        torch.nn.init.normal_(a.wm.reward_head[-1].weight)
    a.requires_grad_(False)
    a.ac.requires_grad_(True)
    a.ac.slow_critic.requires_grad_(False)
    wm_before = {k: v.clone() for k, v in a.wm.state_dict().items()}
    metrics = a.policy_step(batch_for(SPEC, B=2, T=6))
    assert metrics["grad/actor"] > 0
    assert all(torch.equal(v, a.wm.state_dict()[k]) for k, v in wm_before.items())


def test_backprop_needs_a_differentiable_imagination():
    from redraw.agent.actor_critic import ActorCritic, ActorCriticConfig
    from redraw.agent.agent import Agent, AgentConfig

    with pytest.raises(ValueError, match="actor_grad 'backprop' needs the rssm world model"):
        Agent(SPEC, 1, AgentConfig(wm=tiny(), ac=ActorCriticConfig(units=16, actor_grad="backprop")))
    with pytest.raises(ValueError, match="unknown actor_grad 'magic'"):
        ActorCritic(4, 1, ActorCriticConfig(actor_grad="magic"))


@pytest.mark.parametrize("preset, latent", [("paper", (32, 32)), ("cpu", (32, 32)), ("smoke", (4, 4))])
def test_the_rssm_pretraining_is_dreamerv3s_and_the_draw_pretraining_unchanged(tmp_path, preset, latent):
    """pretrain_rssm: 32x32 latents (DreamerV3 keeps them at every model size; the smoke preset
    shrinks them), dyn/rep 0.5/0.1 with free bits 1, horizon 15, backpropagated actor gradients.
    The DRAW pretraining keeps DRAW's settings (docs/method.md#draw)."""
    import shutil

    from redraw.agent.configs import configs_from_params
    from redraw.config import apply_preset, load_params

    shutil.copytree(ROOT / "presets", tmp_path / "presets")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    apply_preset(preset, tmp_path / "params.yaml", root=tmp_path)
    params = load_params(tmp_path / "params.yaml")
    rssm, _ = configs_from_params(params, world_model="rssm")
    assert rssm.world_model == "rssm"
    assert (rssm.wm.latent_vars, rssm.wm.latent_classes) == latent
    assert (rssm.wm.dyn_scale, rssm.wm.rep_scale, rssm.wm.free_bits) == (0.5, 0.1, 1.0)
    assert (rssm.ac.horizon, rssm.ac.actor_grad) == (15, "backprop")
    draw, _ = configs_from_params(params)
    model = params["model"]
    assert (draw.wm.latent_vars, draw.wm.latent_classes) == (model["latent_vars"], model["latent_classes"])
    assert (draw.wm.dyn_scale, draw.wm.rep_scale, draw.ac.actor_grad) == (1.5, 0.5, "reinforce")
    assert draw.ac.horizon == params["actor_critic"]["horizon"]
    if preset == "paper":
        assert rssm.wm.deter == 512 and (draw.wm.latent_vars, draw.ac.horizon) == (256, 40)


def test_a_backprop_explorer_learns_through_the_disagreement_reward():
    """Plan2Explore with the RSSM: the explorer's reward, the ensemble's disagreement, is
    differentiable in the imagined features and actions, as the task reward is."""
    from redraw.agent.actor_critic import ActorCriticConfig
    from redraw.agent.agent import Agent, AgentConfig
    from test_models import batch_for

    torch.manual_seed(0)
    a = Agent(SPEC, 1, AgentConfig(world_model="rssm", wm=tiny(), bf16=False, exploration="plan2explore",
                                   disagreement_heads=3,
                                   ac=ActorCriticConfig(units=16, horizon=4, entropy=0.0, actor_grad="backprop")))
    feat = torch.randn(5, a.wm.feat_dim, requires_grad=True)
    action = torch.zeros(5, 1, requires_grad=True)
    grads = torch.autograd.grad(a.disagreement.reward(feat, action).sum(), (feat, action))
    assert all(g.abs().sum() > 0 for g in grads)
    metrics = a.train_step(batch_for(SPEC, B=2, T=6))
    assert metrics["grad/explore_actor"] > 0

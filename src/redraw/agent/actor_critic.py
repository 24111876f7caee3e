"""Actor-critic in imagination (docs/method.md#actor-critic): DreamerV3 defaults, REINFORCE, or
for the RSSM baseline the actor's gradient backpropagated through the imagined dynamics.

The actor and critic see the world model's features: for DRAW the latent sample z only. Actor: Normal with tanh mean and std in
[min_std, max_std]. Critic: symlog 255-bin two-hot; the lambda-returns and the advantage
baseline bootstrap from the critic itself, and its slow EMA copy is only the target of a
regulariser (DreamerV3's ``slowtar: False``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from redraw.agent.optim import LazyAdam
from redraw.agent.returns import PercentileNormalizer, lambda_returns
from redraw.models.dists import twohot_bins, twohot_loss, twohot_mean
from redraw.models.networks import mlp, uniform_init_, zero_init_
from redraw.perf import CompiledRegions


@dataclass
class ActorCriticConfig:
    """Actor-critic settings; defaults are DreamerV3's as used by the paper."""

    units: int = 512
    layers: int = 2
    min_std: float = 0.1
    max_std: float = 1.0
    horizon: int = 40  #: imagination horizon (DRAW 40, RSSM baseline 15)
    discount: float = 1 - 1 / 333
    lam: float = 0.95
    entropy: float = 3e-4
    slow_critic_mix: float = 0.02  #: EMA rate of the slow critic
    slow_critic_reg: float = 1.0  #: weight of the regulariser towards the slow critic
    retnorm_decay: float = 0.99
    retnorm_floor: float = 1.0  #: return scale = max(floor, P95 - P5) for task returns
    explore_retnorm_floor: float = 0.01  #: the Plan2Explore explorer's floor (reference: retnorm.max 100)
    bins: int = 255
    lr: float = 3e-5
    eps: float = 1e-5
    grad_clip: float = 100.0
    #: reinforce (DRAW presets) | backprop: the normalised advantage differentiated through the
    #: imagined dynamics, rewards and critic (DreamerV3 for continuous actions; needs the RSSM)
    actor_grad: str = "reinforce"


ACTOR_GRADS = ("reinforce", "backprop")


def continuation_weight(cont: torch.Tensor, discount: float) -> torch.Tensor:
    """Each imagined step's loss weight [H, N] from the continue predictions [H+1, N]: the
    discounted probability that the imagined episode is still running."""
    return torch.cumprod(torch.cat([torch.ones_like(cont[:1]), cont[:-1]]) * discount, 0) / discount


class Actor(nn.Module):
    def __init__(self, inp: int, action_size: int, cfg: ActorCriticConfig):
        super().__init__()
        self.cfg = cfg
        self.net = mlp(inp, cfg.units, cfg.layers, 2 * action_size)
        uniform_init_(self)

    def mean_std(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The action distribution's mean (tanh) and std (in [min_std, max_std])."""
        mean, std = self.net(z).float().chunk(2, -1)
        std = (self.cfg.max_std - self.cfg.min_std) * torch.sigmoid(std + 2.0) + self.cfg.min_std
        return torch.tanh(mean), std

    def dist(self, z: torch.Tensor) -> torch.distributions.Normal:
        # no argument validation: it costs a check per call, and non-finite values surface in
        # the losses, which the training loops check
        return torch.distributions.Normal(*self.mean_std(z), validate_args=False)

    def act(self, z: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None,
            clip: bool = True) -> torch.Tensor:
        """An action for features ``z``: a sample (or the mean), clipped to [-1, 1] unless ``clip``
        is False. Imagination keeps the raw sample (the world models clip the actions they take
        in) so that REINFORCE scores the sample the policy drew: the log-density of a clipped
        action is biased, and with the mostly positive advantages of a critic that is still
        learning it drove a fresh actor's std to its floor within ~50 updates."""
        d = self.dist(z)
        if not sample:
            action = d.mean
        else:
            noise = torch.randn(d.mean.shape, generator=generator, device=d.mean.device, dtype=d.mean.dtype)
            action = d.mean + d.stddev * noise
        return action.clamp(-1, 1) if clip else action


class ImaginationPolicy:
    """An actor as imagination's policy: ``sample(features, noise)`` is the action ``act`` would
    draw with that N(0, 1) noise (clipped to [-1, 1] only if ``clip``), so the noise can be drawn
    outside a compiled step."""

    def __init__(self, actor: Actor, action_size: int, clip: bool = False):
        self.actor, self.action_size, self.clip = actor, action_size, clip

    def sample(self, z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        mean, std = self.actor.mean_std(z)
        action = mean + std * noise
        return action.clamp(-1, 1) if self.clip else action


class Critic(nn.Module):
    def __init__(self, inp: int, cfg: ActorCriticConfig):
        super().__init__()
        self.net = mlp(inp, cfg.units, cfg.layers, cfg.bins)
        uniform_init_(self)
        zero_init_(self.net[-1])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ActorCritic(CompiledRegions, nn.Module):
    COMPILED = ("losses",)  #: what ``use_compile`` compiles

    def __init__(self, feat_dim: int, action_size: int, cfg: ActorCriticConfig):
        super().__init__()
        if cfg.actor_grad not in ACTOR_GRADS:
            raise ValueError(f"unknown actor_grad {cfg.actor_grad!r}; choose one of {', '.join(ACTOR_GRADS)}")
        self.cfg = cfg
        self.actor = Actor(feat_dim, action_size, cfg)
        self.critic = Critic(feat_dim, cfg)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer("bins", twohot_bins(cfg.bins), persistent=False)
        self.retnorm = PercentileNormalizer(cfg.retnorm_decay, floor=cfg.retnorm_floor)
        # made on first use (agent.optim.LazyAdam): an agent that only acts never builds them
        self.actor_adam, self.critic_adam = LazyAdam(self.actor, cfg.lr, cfg.eps), LazyAdam(self.critic, cfg.lr, cfg.eps)

    @property
    def actor_opt(self) -> torch.optim.Optimizer:
        return self.actor_adam.get()

    @property
    def critic_opt(self) -> torch.optim.Optimizer:
        return self.critic_adam.get()

    def value(self, z: torch.Tensor, slow: bool = False) -> torch.Tensor:
        return twohot_mean((self.slow_critic if slow else self.critic)(z), self.bins)

    def update(self, traj: dict[str, torch.Tensor], clone: tuple | None = None) -> dict[str, torch.Tensor]:
        """One actor and one critic step on an imagined trajectory (from ``DRAW.imagine``). With
        ``clone`` = (weight, features [..., F], actions [..., A], mask [...]) the actor also
        minimises ``weight`` times the negative log-likelihood of the recorded actions at those
        features (behaviour cloning of the data's actor, beyond the paper; ``bc_loss``)."""
        cfg = self.cfg
        self.actor_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        if cfg.actor_grad == "backprop":
            actor_loss, critic_loss, entropy, ret, scale = self._backprop_losses(traj)
        else:
            z = traj["feat"].detach()  # [H+1, N, F]
            action = traj["action"].detach()
            reward, cont = traj["reward"].detach(), traj["cont"].detach()
            critic_loss, logp, ent, value, ret, weight = self._compiled.get("losses", self.losses)(z, action, reward, cont)
            with torch.no_grad():
                scale = self.retnorm.update(ret)
            actor_loss = self.actor_loss(logp, ent, ret, value, weight, scale)
            entropy = ent.mean()
            # one backward pass for both: the two losses share no parameters (z and the targets are constants)
            (actor_loss + critic_loss).backward()
        bc = None
        if clone is not None:
            bc = self.bc_loss(*clone[1:])
            (clone[0] * bc).backward()  # into the actor's gradients, before they are clipped
        actor_norm = nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.grad_clip)
        self.actor_opt.step()
        critic_norm = nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.grad_clip)
        self.critic_opt.step()
        with torch.no_grad():
            for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters()):
                slow.lerp_(fast, cfg.slow_critic_mix)
        return {
            "loss/actor": actor_loss.detach(),
            "loss/critic": critic_loss.detach(),
            "ac/entropy": entropy.detach(),
            "ac/return": ret.mean().detach(),
            "ac/return_scale": torch.as_tensor(scale).detach(),
            "ac/imag_reward": traj["reward"].detach().mean(),
            "grad/actor": actor_norm.detach(),
            "grad/critic": critic_norm.detach(),
            **({"loss/bc": bc.detach()} if bc is not None else {}),
        }

    def bc_loss(self, feat: torch.Tensor, action: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood under the actor of ``action`` [..., A] at ``feat`` [..., F]
        over the rows where ``mask`` holds (the data's actions; features without a graph)."""
        logp = self.actor.dist(feat.detach()).log_prob(action.float()).sum(-1)
        mask = mask.float()
        return -(logp * mask).sum() / mask.sum().clamp(min=1.0)

    def losses(self, z, action, reward, cont):
        """The critic loss and what the REINFORCE actor loss is made of, from one critic forward on
        the imagined features ``z`` [H+1, N, F]: its values [H+1, N] (without a graph) bootstrap the
        lambda-returns [H, N] (DreamerV3's slowtar False) and its logits of steps 0..H-1 are the
        critic loss's; the slow critic is only the regulariser's target. Returns (critic loss, the
        actions' log-probabilities and entropies [H, N], values, lambda-returns, each step's weight
        [H, N]: the probability that the imagined episode is still running)."""
        cfg = self.cfg
        logits = self.critic(z)
        with torch.no_grad():
            value = twohot_mean(logits, self.bins)
            value_slow = self.value(z[:-1], slow=True)
            ret = lambda_returns(reward, cont, value, cfg.discount, cfg.lam)
            weight = continuation_weight(cont, cfg.discount)
        dist = self.actor.dist(z[:-1])
        logp = dist.log_prob(action).sum(-1)
        ent = dist.entropy().sum(-1)
        return self.critic_loss(logits[:-1], ret, value_slow, weight), logp, ent, value, ret, weight

    def actor_loss(self, logp, ent, ret, value, weight, scale):
        """REINFORCE with an entropy bonus: the advantage against the critic, normalised by the
        return ``scale`` (``retnorm``, which needs the returns first: outside the compiled losses)."""
        adv = (ret - value[:-1]) / scale
        return -(weight * (logp * adv + self.cfg.entropy * ent)).mean()

    def critic_loss(self, logits, ret, value_slow, weight):
        """Two-hot loss of the critic's ``logits`` [H, N, bins] towards the lambda-returns, plus the
        regulariser towards the slow critic's values [H, N]."""
        return (weight * (twohot_loss(logits, ret, self.bins)
                          + self.cfg.slow_critic_reg * twohot_loss(logits, value_slow, self.bins))).mean()

    def _backprop_losses(self, traj):
        """The backpropagated actor loss (the normalised advantage differentiated through the
        imagined dynamics, rewards and critic, DreamerV3's for continuous actions) and the critic
        loss, their gradients already in the actor's and the critic's weights. One critic forward
        on the trajectory's features serves the targets (its values), the actor's advantage (with
        the features' graph) and the critic loss, and one actor forward the entropy bonus: the
        same quantities as separate forwards on detached copies, ~2 fewer critic and 1 fewer actor
        forward per update (at the RSSM's 1,280 features, most of the update's products)."""
        cfg = self.cfg
        feat = traj["feat"]  # [H+1, N, F], with the imagination's graph
        logits = self.critic(feat)
        value_g = twohot_mean(logits, self.bins)
        with torch.no_grad():
            z, cont = feat.detach(), traj["cont"].detach()
            value = value_g.detach()
            value_slow = self.value(z[:-1], slow=True)
            ret = lambda_returns(traj["reward"].detach(), cont, value, cfg.discount, cfg.lam)
            weight = continuation_weight(cont, cfg.discount)
            scale = self.retnorm.update(ret)
        ent = self.actor.dist(z[:-1]).entropy().sum(-1)  # the bonus's gradient reaches the actor directly
        ret_g = lambda_returns(traj["reward"], traj["cont"], value_g, cfg.discount, cfg.lam)
        actor_loss = -(weight * ((ret_g - value_g[:-1]) / scale + cfg.entropy * ent)).mean()
        # the critic learns on constant features: its loss reaches the critic's weights alone
        critic_loss = self.critic_loss(logits[:-1], ret, value_slow, weight)
        # the actor's gradient only: through the imagined dynamics to the actions, without the
        # weight gradients of the world model and the critic that the path also reaches
        actor_loss.backward(inputs=list(self.actor.parameters()), retain_graph=True)
        critic_loss.backward(inputs=list(self.critic.parameters()))
        return actor_loss, critic_loss, ent.mean(), ret, scale


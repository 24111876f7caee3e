"""RSSM: DreamerV3's world model (GRU deterministic state + categorical stochastic state).

Used by the DreamerV3-finetune baseline. Same verbs as DRAW. ``deter`` is the state of a
LayerNorm GRU (DreamerV3's); the prior predicts z from it, the posterior from it and the
observation embedding. Samples are straight-through, and imagination keeps its graph, so a
continuous actor can be trained by backpropagating returns through the imagined dynamics
(DreamerV3's choice for continuous actions; ``ActorCriticConfig.actor_grad``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from redraw.models.base import LatentWorldModel, WorldModelConfig, sample_classes
from redraw.models.dists import latent_logprobs, sample_onehot
from redraw.models.networks import mlp
from redraw.models.rssm_chain import observe_chain

__all__ = ["RSSM", "RSSMState"]


class RSSMState(NamedTuple):
    deter: torch.Tensor  #: [..., deter]
    z: torch.Tensor  #: [..., S, K]


class LayerNormGRU(nn.Module):
    """DreamerV3's GRU cell: one bias-free linear map of [deter, x] to the reset, candidate and
    update parts, LayerNorm over them, and an update gate biased towards keeping the state:
    deter' = u * tanh(r * c) + (1 - u) * deter, r = sigmoid(.), u = sigmoid(. - 1)."""

    def __init__(self, inp: int, deter: int):
        super().__init__()
        self.linear = nn.Linear(deter + inp, 3 * deter, bias=False)
        self.norm = nn.LayerNorm(3 * deter)

    def forward(self, x: torch.Tensor, deter: torch.Tensor) -> torch.Tensor:
        parts = self.norm(self.linear(torch.cat([deter.to(x.dtype), x], -1))).float()
        reset, cand, update = parts.chunk(3, -1)
        reset, update = torch.sigmoid(reset), torch.sigmoid(update - 1)
        return update * torch.tanh(reset * cand) + (1 - update) * deter.float()


def straight_through(logp: torch.Tensor, generator: torch.Generator | None,
                     uniform: torch.Tensor | None = None) -> torch.Tensor:
    """A one-hot sample whose gradient is that of the probabilities (forward: the sample itself)."""
    probs = logp.exp()
    return sample_classes(logp, generator, uniform) + (probs - probs.detach())


class RSSM(LatentWorldModel):
    def __init__(self, obs_spec: dict[str, tuple[tuple[int, ...], str]], action_size: int, cfg: WorldModelConfig):
        super().__init__(obs_spec, action_size, cfg, feat_dim=cfg.deter + cfg.latent_dim)
        D = cfg.latent_dim
        self.img_in = mlp(D + action_size, cfg.hidden, 1)
        self.gru = LayerNormGRU(cfg.hidden, cfg.deter)
        self.prior = mlp(cfg.deter, cfg.hidden, 1, D)
        self.posterior = mlp(cfg.deter + self.embed_dim, cfg.hidden, 1, D)
        self.init_deter = nn.Parameter(torch.zeros(cfg.deter))
        self._finish_init()

    def features(self, state: RSSMState) -> torch.Tensor:
        return torch.cat([state.deter, state.z.flatten(-2)], -1)

    def initial(self, batch_shape: tuple[int, ...]) -> RSSMState:
        """Learned initial deter state (tanh), z = the prior's mode there."""
        deter = torch.tanh(self.init_deter).expand(*batch_shape, -1)
        logits = self._split(self.prior(deter))
        z = nn.functional.one_hot(logits.argmax(-1), self.cfg.latent_classes).to(deter.dtype)
        return RSSMState(deter, z)

    def _deter_step(self, prev: RSSMState, action: torch.Tensor) -> torch.Tensor:
        x = self.img_in(torch.cat([prev.z.flatten(-2), action.clamp(-1, 1)], -1))
        return self.gru(x, prev.deter)

    def step(self, prev: RSSMState, action: torch.Tensor, generator: torch.Generator | None = None,
             uniform: torch.Tensor | None = None):
        deter = self._deter_step(prev, action)
        logp = latent_logprobs(self._split(self.prior(deter)), self.cfg.unimix)
        return RSSMState(deter, straight_through(logp, generator, uniform)), logp

    #: ``observe``'s chain as one autograd node with its own backward (``models.rssm_chain``),
    #: ``perf.fused_chain``; false: step by step through autograd. The same numbers to float rounding
    fused_chain = True

    IMAGINE_GRAD = True  #: imagination keeps its graph: rewards and features are differentiable in the actions
    #: one imagined step per compiled call: with the graph kept, 8 steps in one compiled graph took
    #: 25 s to compile instead of 9 and the update was no faster (cpu preset RSSM, docs/performance.md)
    IMAGINE_CHUNK = 1

    def observe(self, obs: dict[str, torch.Tensor], action: torch.Tensor, is_first: torch.Tensor,
                state: RSSMState | None = None, generator: torch.Generator | None = None) -> dict:
        B, T = action.shape[:2]
        embed = self.encode(obs)
        init = self.initial((B,))
        prev = state if state is not None else init
        if self.fused_chain:
            deters, zs, post_logp = self._fused_chain(embed, action, is_first, init, prev, generator)
            states = RSSMState(deters, zs)
        else:
            states, post_logp = self._chain_loop(embed, action, is_first, init, prev, generator)
        # nothing in the chain depends on the prior: one call for every step instead of T small ones
        prior_logp = latent_logprobs(self._split(self.prior(states.deter)), self.cfg.unimix)
        return {
            "states": states,
            "feat": self.features(states),
            "post_logp": post_logp,
            "prior_logp": prior_logp,
            "embed": embed,
            "state": RSSMState(states.deter[:, -1], states.z[:, -1]),
        }

    def _fused_chain(self, embed, action, is_first, init: RSSMState, prev: RSSMState, generator):
        """``observe``'s chain as one autograd node (``models.rssm_chain``), in fp32 on any device:
        deters, samples and posterior log-probs, [B, T, ...]."""
        with torch.autocast(action.device.type, enabled=False):
            return observe_chain(self, embed, action, is_first, init.deter[0], init.z[0], prev.deter, prev.z,
                                 generator)

    def _chain_loop(self, embed, action, is_first, init: RSSMState, prev: RSSMState, generator):
        """``observe``'s chain step by step through autograd (``perf.fused_chain: false``)."""
        T = action.shape[1]
        deters, zs, post_logp = [], [], []
        first = is_first.bool()
        with self.chain_precision(action.device):  # fp32 on a CPU, where its 16-row products are faster
            init = RSSMState(*(x.float() for x in init))
            prev, chain_embed, action = RSSMState(*(x.float() for x in prev)), embed.float(), action.float()
            for t in range(T):
                reset = first[:, t]
                prev = RSSMState(torch.where(reset[:, None], init.deter, prev.deter),
                                 torch.where(reset[:, None, None], init.z, prev.z))
                act = torch.where(reset[:, None], torch.zeros_like(action[:, t]), action[:, t])
                deter = self._deter_step(prev, act)
                post = latent_logprobs(self._split(self.posterior(torch.cat([deter, chain_embed[:, t]], -1))),
                                       self.cfg.unimix)
                z = sample_onehot(post, generator)
                post_logp.append(post)
                deters.append(deter)
                zs.append(z)
                prev = RSSMState(deter, z)
        return RSSMState(torch.stack(deters, 1), torch.stack(zs, 1)), torch.stack(post_logp, 1)

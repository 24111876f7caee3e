"""One acting step with everything explicit: what a robot loop (or an exported model) calls.

``PolicyStep(agent)(*obs, latent, prev_action, is_first, uniform, noise) -> (action, latent)``

* ``obs``: the observation tensors in the agent's ``obs_spec`` order, each [B, ...]
* ``latent`` [B, L]: the state the previous call returned (anything, e.g. zeros, when
  ``is_first``); DRAW: [prior belief, sample z], RSSM: [GRU state, sample z], flattened
* ``prev_action`` [B, A]: the action taken before this observation (ignored when ``is_first``)
* ``is_first`` [B]: 1 at an episode start (the state resets to the learned initial state)
* ``uniform`` [B, S] in [0, 1): one per latent variable, for sampling the posterior
* ``noise`` [B, A] ~ N(0, 1): the actor's exploration noise (zeros: the mean action)

The world model filters the observation exactly as ``observe`` does for one step (the
residual, when calibrated, corrects the prior chain) and the actor acts on the features.
Randomness is an input, so a call is a pure function: ``Agent.act`` draws it from the agent's
generator and calls this same module, which is why a deployed policy reproduces the evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from redraw.models.dists import class_softmax, latent_logprobs, one_hot, sample_index
from redraw.models.draw import DRAW, LatentState
from redraw.models.rssm import RSSMState


class RowByRow(TorchFunctionMode):
    """Inside it, the matrix products, convolutions and transcendental elementwise functions of a
    batch run one row at a time, each the very call a batch of one makes: N episodes acted
    together (``Agent.act_batch``) then get, bit for bit, the actions each gets acted alone.
    A product over N rows can round differently from N products of one row (the BLAS library
    picks its kernels by shape: ~1e-7 apart, enough to flip a latent sample now and then and so
    change an episode). PyTorch's CPU kernels for exp, tanh, SiLU and the like run SIMD vectors
    two at a time and the remaining elements through a scalar formula that rounds differently,
    and which elements remain depends on the tensor's size: with AVX512, a [1, 16] tensor went
    all scalar and a [3, 16] one mostly vectorised. The rest of a policy step (LayerNorm,
    softmax, sums along a row, exact arithmetic) works row by row anyway. N such calls still cost
    far less than N policy steps (an evaluation's 10 episodes: ~2.6x faster together)."""

    ROWWISE = (F.linear, F.conv2d)
    #: unary elementwise functions whose vectorised and scalar formulas round differently (by name:
    #: the torch function, the Tensor method and the functional form share it)
    ELEMENTWISE = frozenset({"exp", "expm1", "exp2", "log", "log1p", "log2", "sigmoid", "logsigmoid", "tanh",
                             "silu", "softplus", "elu", "gelu", "mish", "erf"})

    def __init__(self, rows: int):
        super().__init__()
        self.rows = rows  #: the batch's size: only tensors of that many rows (the batch's own) are split

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        x = args[0] if args else None
        if (isinstance(x, torch.Tensor) and x.dim() > 1 and x.shape[0] == self.rows > 1
                and (func in self.ROWWISE or (getattr(func, "__name__", None) in self.ELEMENTWISE
                                              and not any(isinstance(a, torch.Tensor) for a in args[1:])))):
            return torch.cat([func(x[i : i + 1], *args[1:], **kwargs) for i in range(self.rows)])
        return func(*args, **kwargs)


def episode_generator(rng, device: str | torch.device = "cpu") -> torch.Generator:
    """The torch generator one episode's acting randomness comes from, seeded by the episode's
    numpy ``rng`` (``behaviour.reset(rng)``): an episode's actions then depend on its seed alone,
    not on the episodes acted before it (so collection is the same whatever the worker count)."""
    return torch.Generator(device=device).manual_seed(int(rng.integers(0, 2**63 - 1)))


class PolicyStep(nn.Module):
    def __init__(self, agent, explore: bool = False):
        super().__init__()
        self.wm = agent.wm
        self.actor = agent.explorer.actor if explore and agent.explorer is not None else agent.ac.actor
        self.obs_keys = list(agent.obs_spec)
        cfg = agent.wm.cfg
        self.S, self.K = cfg.latent_vars, cfg.latent_classes
        self.is_draw = isinstance(agent.wm, DRAW)
        self.head = self.S * self.K if self.is_draw else cfg.deter  #: belief (DRAW) or GRU state (RSSM)
        self.latent_size = self.head + self.S * self.K
        self.action_size = agent.action_size

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.obs_keys)
        obs = dict(zip(self.obs_keys, args[:n]))
        latent, prev_action, is_first, uniform, noise = args[n:]
        wm, B = self.wm, latent.shape[0]
        first = is_first.reshape(B, 1) > 0.5
        head = latent[:, : self.head]
        z = latent[:, self.head :].reshape(B, self.S, self.K)
        action = torch.where(first, torch.zeros_like(prev_action), prev_action)
        init = wm.initial((B,))
        if self.is_draw:
            prev = LatentState(torch.where(first[..., None], init.belief, head.reshape(B, self.S, self.K)),
                               torch.where(first[..., None], init.z, z))
            raw, _ = wm.dynamics_step(action, prev)
            head = class_softmax(raw).flatten(1)
            post = wm.posterior_logits(wm.encode(obs))
        else:
            prev = RSSMState(torch.where(first, init.deter, head), torch.where(first[..., None], init.z, z))
            head = wm._deter_step(prev, action)
            post = wm._split(wm.posterior(torch.cat([head, wm.encode(obs)], -1)))
        probs = latent_logprobs(post, wm.cfg.unimix).exp()
        z = one_hot(sample_index(probs, uniform=uniform), self.K, probs.dtype).flatten(1)
        feat = z if self.is_draw else torch.cat([head, z], -1)
        mean, std = self.actor.mean_std(feat)
        out = (mean + std * noise).clamp(-1, 1)
        return out, torch.cat([head.float(), z], -1)

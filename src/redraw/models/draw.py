"""DRAW: the autoregressive latent world model of ReDRAW (docs/method.md#draw).

Categorical latents only (``vars x classes``, no recurrent deterministic state). The posterior
sees the current observation only; the prior (dynamics) sees ``[previous action, previous
belief, previous sample]`` where the belief chain is always the prior's own class
probabilities. ``dynamics_step`` is the single place where the latent residual plugs in.

Verbs: ``observe`` (filter a sequence), ``imagine`` (roll out a policy), ``loss``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from redraw.models.base import LatentWorldModel, WorldModelConfig, sample_classes
from redraw.models.dists import class_softmax, latent_logprobs, sample_onehot
from redraw.models.networks import mlp
from redraw.models.prior_chain import prior_chain

__all__ = ["DRAW", "LatentState", "WorldModelConfig"]


class LatentState(NamedTuple):
    """The previous-step inputs the prior needs: belief (prior probs) and sample, [..., S, K]."""

    belief: torch.Tensor
    z: torch.Tensor


class DRAW(LatentWorldModel):
    #: ``observe``'s prior chain as one autograd node with its own backward (``models.prior_chain``),
    #: ``perf.fused_chain``; false: step by step through autograd. The same numbers to float rounding
    fused_chain = True

    def __init__(self, obs_spec: dict[str, tuple[tuple[int, ...], str]], action_size: int, cfg: WorldModelConfig):
        super().__init__(obs_spec, action_size, cfg, feat_dim=cfg.latent_dim)
        D = cfg.latent_dim
        self.posterior = mlp(self.embed_dim, cfg.hidden, 1, D)
        self.prior = mlp(action_size + 2 * D, cfg.hidden, cfg.prior_layers, D)
        self.init_logits = nn.Parameter(torch.zeros(cfg.latent_vars, cfg.latent_classes))
        self._finish_init()
        self.residual: nn.Module | None = None  # set by calibration (the latent residual)
        #: uniform mix of the corrected prior (the paper: none); the policy stage's
        #: train_policy.imag_unimix sets it, a control for how exploitable sharp predictions are
        self.residual_unimix = 0.0

    def posterior_logits(self, embed: torch.Tensor) -> torch.Tensor:
        return self._split(self.posterior(embed))

    def features(self, state: LatentState) -> torch.Tensor:
        """What decoders, heads and the actor see: the sample z, flattened."""
        return state.z.flatten(-2)

    def initial(self, batch_shape: tuple[int, ...]) -> LatentState:
        """The learned initial state: belief = softmax(init logits), z = their argmax."""
        belief = torch.softmax(self.init_logits, -1)
        z = nn.functional.one_hot(self.init_logits.argmax(-1), self.cfg.latent_classes).to(belief.dtype)
        return LatentState(belief.expand(*batch_shape, -1, -1), z.expand(*batch_shape, -1, -1))

    def dynamics_step(self, prev_action: torch.Tensor, prev: LatentState,
                      correction: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior over the next latent: returns (raw logits, log-probs), both [..., S, K].

        Without a residual the distribution has the 1% uniform mix. With one, the residual's
        output (inputs: stop-gradient previous sample and action; ``correction`` when the caller
        computed it already) is added to the raw logits and the corrected distribution has no
        mix (``residual_unimix``, 0 unless set). The next belief is ``softmax(raw logits)``. With a residual the prior's inputs are
        stop-gradient too: the residual learns without backpropagation through time.
        """
        return self._correct(self.prior_logits(prev_action, prev), prev_action, prev, correction)

    def prior_logits(self, prev_action: torch.Tensor, prev: LatentState) -> torch.Tensor:
        """The pretrained prior's raw logits, before any residual: [..., S, K]."""
        a = prev_action.clamp(-1, 1)
        belief, z = (prev.belief, prev.z) if self.residual is None else (prev.belief.detach(), prev.z.detach())
        return self._split(self.prior(torch.cat([a, belief.flatten(-2), z.flatten(-2)], -1)))

    def _correct(self, raw: torch.Tensor, prev_action: torch.Tensor, prev: LatentState,
                 correction: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.residual is None:
            return raw, latent_logprobs(raw, self.cfg.unimix)
        if correction is None:
            correction = self.residual(prev.z.detach().flatten(-2), prev_action.clamp(-1, 1).detach())
        raw = raw + correction
        return raw, latent_logprobs(raw, self.residual_unimix)

    def prior_step(self, reset: torch.Tensor, init_belief: torch.Tensor, belief: torch.Tensor, z: torch.Tensor,
                   action: torch.Tensor, correction: torch.Tensor | None):
        """One step of ``observe``'s prior chain: the previous belief (the initial one where
        ``reset``) and sample ``z`` with ``action`` -> (the pretrained prior's raw logits, the
        (corrected) prior's log-probs, the next belief)."""
        prev = LatentState(torch.where(reset, init_belief, belief), z)
        base = self.prior_logits(action, prev)
        raw, logp = self._correct(base, action, prev, correction)
        return base, logp, class_softmax(raw)

    def step(self, prev: LatentState, action: torch.Tensor, generator: torch.Generator | None = None,
             uniform: torch.Tensor | None = None):
        """One prior transition with a sample (from ``uniform`` [..., S] if given): (next state, its log-probs)."""
        raw, logp = self.dynamics_step(action, prev)
        return LatentState(class_softmax(raw), sample_classes(logp, generator, uniform)), logp

    def observe(self, obs: dict[str, torch.Tensor], action: torch.Tensor, is_first: torch.Tensor,
                state: LatentState | None = None, generator: torch.Generator | None = None) -> dict:
        """Filter sequences [B, T, ...]: posterior samples for every step, the prior chain beside.

        ``action[:, t]`` is the action taken before observation t (the schema's convention).
        At ``is_first`` the previous state resets to the initial state and the action to zero.
        Returns ``states`` (LatentState of [B, T, S, K]: prior beliefs and posterior samples),
        ``feat``, ``post_logp``, ``prior_logp`` and the last ``state``.
        """
        B, T = action.shape[:2]
        embed = self.encode(obs)
        post_logp = latent_logprobs(self.posterior_logits(embed), self.cfg.unimix)  # obs-only: all at once
        post_z = sample_onehot(post_logp, generator)
        init = self.initial((B,))
        prev = state if state is not None else init
        first = is_first.bool()
        # the transition inputs besides the belief are known up front: the previous posterior
        # sample (the initial state at resets) and the previous action (zero at resets)
        prev_z = torch.cat([prev.z[:, None].to(post_z.dtype), post_z[:, :-1]], 1)
        prev_z = torch.where(first[..., None, None], init.z.to(post_z.dtype)[:, None], prev_z)
        acts = torch.where(first[..., None], torch.zeros_like(action), action)
        members = None
        if self.residual is not None:  # one batched call for every step
            members = self.residual.members(prev_z.detach().flatten(-2), acts.clamp(-1, 1).detach())
        correction = None if members is None else members.float().mean(0)  # members averaged in logit space
        # one node unless a residual is attached while the prior itself would learn (no method does:
        # a residual's chain has no gradient, so the fused chain runs it forward only)
        prior_learns = torch.is_grad_enabled() and any(p.requires_grad for p in self.prior.parameters())
        if self.fused_chain and self.cfg.prior_layers > 0 and (correction is None or not prior_learns):
            base, belief = self._fused_prior_chain(acts, prev_z, first, prev, correction)
            beliefs = belief.view(B, T, *init.belief.shape[-2:])
            prior_base = base.view_as(beliefs)
            prior_logp = self._correct(prior_base, acts, prev, correction)[1]  # the (corrected) prior's log-probs
        else:
            prior_base, prior_logp, beliefs = self._prior_loop(acts, prev_z, first, init, prev, correction)
        belief = beliefs[:, -1]
        prev = LatentState(belief, post_z[:, -1])
        extra = {}
        if members is not None:  # what calibration needs for its per-member losses
            extra = {"prior_base": prior_base, "residual_members": members}
        return {
            "states": LatentState(beliefs, post_z),
            "feat": post_z.flatten(-2),
            "post_logp": post_logp,
            "prior_logp": prior_logp,
            "embed": embed,
            "state": prev,
            **extra,
        }

    def _prior_loop(self, acts, prev_z, first, init: LatentState, prev: LatentState, correction):
        """``observe``'s prior chain step by step through autograd (``perf.fused_chain: false``):
        every step's prior raw logits, log-probs and beliefs, [B, T, S, K]."""
        prior_base, prior_logp, beliefs = [], [], []
        with self.chain_precision(acts.device):  # fp32 on a CPU, where its 16-row products are faster
            belief, init_belief = prev.belief.float(), init.belief.float()
            prev_z, acts = prev_z.float(), acts.float()
            for t in range(acts.shape[1]):
                base, logp, belief = self.prior_step(first[:, t, None, None], init_belief, belief, prev_z[:, t],
                                                     acts[:, t], None if correction is None else correction[:, t])
                prior_base.append(base)
                prior_logp.append(logp)
                beliefs.append(belief)
        return tuple(torch.stack(x, 1) for x in (prior_base, prior_logp, beliefs))

    def _fused_prior_chain(self, acts, prev_z, first, prev: LatentState, correction):
        """``observe``'s prior chain as one autograd node (``models.prior_chain``), in fp32 on any
        device: the prior's raw logits and the beliefs, [B, T, S*K]."""
        B = acts.shape[0]
        with torch.autocast(acts.device.type, enabled=False):
            belief0 = prev.belief.float().reshape(B, -1)
            if self.residual is not None:  # the residual learns without backpropagation through time
                belief0, prev_z = belief0.detach(), prev_z.detach()
            return prior_chain(self.prior, acts.float().clamp(-1, 1), prev_z.float().flatten(-2), first,
                               torch.softmax(self.init_logits.float(), -1).flatten(), belief0,
                               self.cfg.latent_classes, None if correction is None else correction.flatten(-2))

"""DRAW: the autoregressive latent world model of ReDRAW (METHOD.md, "DRAW").

Categorical latents only (``vars x classes``, no recurrent deterministic state). The posterior
sees the current observation only; the prior (dynamics) sees ``[previous action, previous
belief, previous sample]`` where the belief chain is always the prior's own class
probabilities. ``dynamics_step`` is the single place where the latent residual plugs in.

Verbs: ``observe`` (filter a sequence), ``imagine`` (roll out a policy), ``loss``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import nn

from redraw.models.dists import (
    categorical_kl,
    latent_logprobs,
    sample_onehot,
    symlog,
    twohot_bins,
    twohot_loss,
    twohot_mean,
)
from redraw.models.networks import ConvDecoder, ConvEncoder, mlp, uniform_init_, zero_init_


@dataclass
class WorldModelConfig:
    """DRAW sizes and loss settings; defaults are the paper's (METHOD.md)."""

    latent_vars: int = 256  #: categorical variables
    latent_classes: int = 4  #: classes per variable
    hidden: int = 512  #: width of the posterior and prior layers
    prior_layers: int = 3  #: Linear+LN+SiLU layers of the prior MLP
    cnn_depth: int = 32  #: first conv's channels (then x2, x4, x8)
    mlp_units: int = 1024  #: vector encoder/decoder width
    mlp_layers: int = 5  #: vector encoder/decoder depth
    head_units: int = 512  #: reward / continue head width
    head_layers: int = 2
    unimix: float = 0.01  #: uniform share mixed into prior and posterior
    free_bits: float = 1.0  #: KL terms are clipped below at this many nats
    dyn_scale: float = 1.5
    rep_scale: float = 0.5
    reward_bins: int = 255
    lr: float = 1e-4
    eps: float = 1e-8
    grad_clip: float = 1000.0

    @property
    def latent_dim(self) -> int:
        return self.latent_vars * self.latent_classes


class LatentState(NamedTuple):
    """The previous-step inputs the prior needs: belief (prior probs) and sample, [..., S, K]."""

    belief: torch.Tensor
    z: torch.Tensor


class DRAW(nn.Module):
    def __init__(self, obs_spec: dict[str, tuple[tuple[int, ...], str]], action_size: int, cfg: WorldModelConfig):
        super().__init__()
        self.cfg, self.obs_spec, self.action_size = cfg, dict(obs_spec), action_size
        self.image_keys = [k for k, (shape, _) in obs_spec.items() if len(shape) == 3]
        self.vector_keys = [k for k, (shape, _) in obs_spec.items() if len(shape) == 1]
        if not self.image_keys and not self.vector_keys:
            raise ValueError(f"observation spec has no image or vector keys: {obs_spec}")
        vec_dim = sum(obs_spec[k][0][0] for k in self.vector_keys)
        S, K, D = cfg.latent_vars, cfg.latent_classes, cfg.latent_dim
        embed = 0
        if self.image_keys:
            size = obs_spec[self.image_keys[0]][0][0]
            self.cnn = ConvEncoder(cfg.cnn_depth, size)
            self.image_decoder = ConvDecoder(D, cfg.cnn_depth, size)
            embed += self.cnn.out_dim * len(self.image_keys)
        if self.vector_keys:
            self.vec_encoder = mlp(vec_dim, cfg.mlp_units, cfg.mlp_layers)
            self.vec_decoder = mlp(D, cfg.mlp_units, cfg.mlp_layers, vec_dim)
            embed += cfg.mlp_units
        self.embed_dim = embed
        self.posterior = mlp(embed, cfg.hidden, 1, D)
        self.prior = mlp(action_size + 2 * D, cfg.hidden, cfg.prior_layers, D)
        self.reward_head = mlp(D, cfg.head_units, cfg.head_layers, cfg.reward_bins)
        self.cont_head = mlp(D, cfg.head_units, cfg.head_layers, 1)
        self.init_logits = nn.Parameter(torch.zeros(S, K))
        uniform_init_(self)
        zero_init_(self.reward_head[-1])
        self.register_buffer("bins", twohot_bins(cfg.reward_bins), persistent=False)
        self.residual: nn.Module | None = None  # set by calibration (redraw.models.residual)

    # -- pieces ---------------------------------------------------------------------------------
    def _split(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.reshape(*flat.shape[:-1], self.cfg.latent_vars, self.cfg.latent_classes)

    def encode(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.cnn(obs[k]) for k in self.image_keys]
        if self.vector_keys:
            vec = torch.cat([obs[k].float() for k in self.vector_keys], -1)
            parts.append(self.vec_encoder(symlog(vec)))
        return torch.cat(parts, -1)

    def posterior_logits(self, embed: torch.Tensor) -> torch.Tensor:
        return self._split(self.posterior(embed))

    def initial(self, batch_shape: tuple[int, ...]) -> LatentState:
        """The learned initial state: belief = softmax(init logits), z = their argmax."""
        belief = torch.softmax(self.init_logits, -1)
        z = nn.functional.one_hot(self.init_logits.argmax(-1), self.cfg.latent_classes).to(belief.dtype)
        return LatentState(belief.expand(*batch_shape, -1, -1), z.expand(*batch_shape, -1, -1))

    def dynamics_step(self, prev_action: torch.Tensor, prev: LatentState) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior over the next latent: returns (raw logits, log-probs), both [..., S, K].

        Without a residual the distribution has the 1% uniform mix. With one, the residual's
        output (inputs: stop-gradient previous sample and action) is added to the raw logits and
        the corrected distribution has no mix. The next belief is ``softmax(raw logits)``.
        """
        a = prev_action.clamp(-1, 1)
        inp = torch.cat([a, prev.belief.flatten(-2), prev.z.flatten(-2)], -1)
        raw = self._split(self.prior(inp))
        if self.residual is None:
            return raw, latent_logprobs(raw, self.cfg.unimix)
        raw = raw + self.residual(prev.z.detach().flatten(-2), a.detach())
        return raw, latent_logprobs(raw, 0.0)

    def reward(self, z: torch.Tensor) -> torch.Tensor:
        return twohot_mean(self.reward_head(z.flatten(-2)), self.bins)

    def cont(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.cont_head(z.flatten(-2)).squeeze(-1).float())

    def decode(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Observations decoded from samples [..., S, K]: images as uint8-scale floats, vectors raw."""
        from redraw.models.dists import symexp

        flat, out = z.flatten(-2), {}
        for k in self.image_keys:
            out[k] = ((self.image_decoder(flat).float() + 0.5) * 255.0).clamp(0, 255)
        if self.vector_keys:
            vec, i = symexp(self.vec_decoder(flat).float()), 0
            for k in self.vector_keys:
                n = self.obs_spec[k][0][0]
                out[k], i = vec[..., i : i + n], i + n
        return out

    # -- verbs ----------------------------------------------------------------------------------
    def observe(
        self,
        obs: dict[str, torch.Tensor],
        action: torch.Tensor,
        is_first: torch.Tensor,
        state: LatentState | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Filter sequences [B, T, ...]: posterior samples for every step, the prior chain beside.

        ``action[:, t]`` is the action taken before observation t (the schema's convention).
        At ``is_first`` the previous state resets to the initial state and the action to zero.
        """
        B, T = action.shape[:2]
        post_logits = self.posterior_logits(self.encode(obs))  # all steps at once: obs-only
        post_logp = latent_logprobs(post_logits, self.cfg.unimix)
        post_z = sample_onehot(post_logp, generator)
        prev = state if state is not None else self.initial((B,))
        init = self.initial((B,))
        prior_logp, beliefs = [], []
        first = is_first.bool()
        for t in range(T):
            reset = first[:, t, None, None]
            prev = LatentState(torch.where(reset, init.belief, prev.belief), torch.where(reset, init.z, prev.z))
            act = torch.where(first[:, t, None], torch.zeros_like(action[:, t]), action[:, t])
            raw, logp = self.dynamics_step(act, prev)
            belief = torch.softmax(raw.float(), -1)
            prior_logp.append(logp)
            beliefs.append(belief)
            prev = LatentState(belief, post_z[:, t])
        return {
            "post_logp": post_logp,
            "post_z": post_z,
            "prior_logp": torch.stack(prior_logp, 1),
            "belief": torch.stack(beliefs, 1),
            "state": prev,
        }

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None):
        """World-model loss on a batch [B, T, ...]; returns (loss, metrics, observe outputs)."""
        cfg = self.cfg
        obs = {k: batch[k] for k in self.obs_spec}
        out = self.observe(obs, batch["action"], batch["is_first"], generator=generator)
        z = out["post_z"].flatten(-2)
        losses = {}
        for k in self.image_keys:
            target = batch[k].float() / 255.0 - 0.5
            losses[f"image"] = ((self.image_decoder(z).float() - target) ** 2).sum((-1, -2, -3))
        if self.vector_keys:
            target = symlog(torch.cat([batch[k].float() for k in self.vector_keys], -1))
            losses["vector"] = ((self.vec_decoder(z).float() - target) ** 2).sum(-1)
        losses["reward"] = twohot_loss(self.reward_head(z), batch["reward"].float(), self.bins)
        cont_target = 1.0 - batch["is_terminal"].float()
        losses["cont"] = nn.functional.binary_cross_entropy_with_logits(
            self.cont_head(z).squeeze(-1).float(), cont_target, reduction="none"
        )
        mask = (~batch["is_first"].bool()).float()
        post, prior = out["post_logp"], out["prior_logp"]
        dyn = categorical_kl(post.detach(), prior)
        rep = categorical_kl(post, prior.detach())
        denom = mask.sum().clamp(min=1.0)
        dyn_loss = (torch.clamp(dyn, min=cfg.free_bits) * mask).sum() / denom
        rep_loss = (torch.clamp(rep, min=cfg.free_bits) * mask).sum() / denom
        total = sum(v.mean() for v in losses.values()) + cfg.dyn_scale * dyn_loss + cfg.rep_scale * rep_loss
        metrics = {f"loss/{k}": v.mean().detach() for k, v in losses.items()}
        metrics.update({
            "loss/dyn": dyn_loss.detach(),
            "loss/rep": rep_loss.detach(),
            "wm/kl": ((dyn * mask).sum() / denom).detach(),
            "wm/post_entropy": -(post.exp() * post).sum((-1, -2)).mean().detach(),
        })
        return total, metrics, out

    @torch.no_grad()
    def open_loop(self, obs, action, is_first, context: int, generator: torch.Generator | None = None):
        """Filter the first ``context`` steps, then predict the rest from the recorded actions alone.

        Returns ``z`` [B, T - context, S, K], prior samples for steps ``context..T-1``, and the
        decoded predictions ``pred`` beside the true observations ``truth``.
        """
        T = action.shape[1]
        if not 0 < context < T:
            raise ValueError(f"context must be in 1..{T - 1}, got {context}")
        head = {k: v[:, :context] for k, v in obs.items()}
        out = self.observe(head, action[:, :context], is_first[:, :context], generator=generator)
        prev = LatentState(out["belief"][:, -1], out["post_z"][:, -1])
        zs = []
        for t in range(context, T):
            raw, logp = self.dynamics_step(action[:, t], prev)
            idx = torch.multinomial(logp.exp().reshape(-1, logp.shape[-1]), 1, generator=generator).squeeze(-1)
            z = nn.functional.one_hot(idx, self.cfg.latent_classes).reshape(logp.shape).to(prev.z.dtype)
            prev = LatentState(torch.softmax(raw.float(), -1), z)
            zs.append(z)
        z = torch.stack(zs, 1)
        return {"z": z, "pred": self.decode(z), "truth": {k: v[:, context:] for k, v in obs.items()}}

    @torch.no_grad()
    def imagine(
        self,
        policy: Callable[[torch.Tensor], torch.Tensor],
        start: LatentState,
        horizon: int,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Roll the policy out in the latent dynamics from ``start`` ([N, S, K] each).

        Returns ``z`` [H+1, N, S, K] (z[0] = start), ``action`` [H, N, A] (action[t] taken at
        z[t]), ``reward`` and ``cont`` [H, N] predicted at z[t+1].
        """
        zs, actions = [start.z], []
        prev = start
        for _ in range(horizon):
            action = policy(prev.z.flatten(-2))
            raw, logp = self.dynamics_step(action, prev)
            z = nn.functional.one_hot(
                torch.multinomial(logp.exp().reshape(-1, logp.shape[-1]), 1, generator=generator).squeeze(-1),
                self.cfg.latent_classes,
            ).reshape(logp.shape).to(prev.z.dtype)
            prev = LatentState(torch.softmax(raw.float(), -1), z)
            zs.append(z)
            actions.append(action)
        z = torch.stack(zs)
        return {"z": z, "action": torch.stack(actions), "reward": self.reward(z[1:]), "cont": self.cont(z[1:])}

"""What DRAW and the RSSM share: encoders, decoders, reward/continue heads, the loss, and the
generic verbs built on a model's one-step transition (``imagine``, ``open_loop``).

A concrete model supplies ``observe`` (filter a sequence; returns per-step ``states``, their
``feat``, and posterior / prior log-probabilities), ``step`` (one prior transition with a
sample), ``features`` (what decoders, heads and the actor see) and ``initial``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from redraw.models.dists import categorical_kl, one_hot, sample_index, symexp, symlog, twohot_bins, twohot_loss, twohot_mean
from redraw.models.networks import ConvDecoder, ConvEncoder, mlp, uniform_init_, zero_init_
from redraw.perf import CompiledRegions


@dataclass
class WorldModelConfig:
    """World-model sizes and loss settings; defaults are the paper's DRAW (docs/method.md#draw)."""

    latent_vars: int = 256  #: categorical variables
    latent_classes: int = 4  #: classes per variable
    hidden: int = 512  #: width of the posterior and prior layers
    prior_layers: int = 3  #: Linear+LN+SiLU layers of the DRAW prior MLP
    deter: int = 512  #: RSSM only: GRU state size
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
    #: proprio vectors: standardise each dimension by a mean and std fixed from the training data
    #: before symlog (encoder input and reconstruction target). Off in the paper preset (symlog
    #: only, as DreamerV3); on in the cpu preset, where symlog alone lets the small dims that carry
    #: the reward (reacher's to_target, pendulum's orientation) drown under the velocities.
    obs_norm: bool = False
    lr: float = 1e-4
    eps: float = 1e-8
    grad_clip: float = 1000.0

    @property
    def latent_dim(self) -> int:
        return self.latent_vars * self.latent_classes


def sample_classes(logp: torch.Tensor, generator: torch.Generator | None,
                   uniform: torch.Tensor | None = None) -> torch.Tensor:
    """One-hot sample (no gradient) from log-probabilities [..., S, K]; ``uniform`` [..., S]
    supplies the random numbers (see ``sample_index``)."""
    return one_hot(sample_index(logp.exp(), generator, uniform), logp.shape[-1], logp.dtype)


class LatentWorldModel(CompiledRegions, nn.Module):
    def __init__(self, obs_spec: dict[str, tuple[tuple[int, ...], str]], action_size: int, cfg: WorldModelConfig,
                 feat_dim: int):
        super().__init__()
        self.cfg, self.obs_spec, self.action_size, self.feat_dim = cfg, dict(obs_spec), action_size, feat_dim
        self.image_keys = [k for k, (shape, _) in obs_spec.items() if len(shape) == 3]
        self.vector_keys = [k for k, (shape, _) in obs_spec.items() if len(shape) == 1]
        if not self.image_keys and not self.vector_keys:
            raise ValueError(f"observation spec has no image or vector keys: {obs_spec}")
        if len(self.image_keys) > 1:
            raise ValueError(f"one image observation is supported, got {self.image_keys}")
        vec_dim = sum(obs_spec[k][0][0] for k in self.vector_keys)
        embed = 0
        if self.image_keys:
            size = obs_spec[self.image_keys[0]][0][0]
            self.cnn = ConvEncoder(cfg.cnn_depth, size)
            self.image_decoder = ConvDecoder(feat_dim, cfg.cnn_depth, size)
            embed += self.cnn.out_dim
        if self.vector_keys:
            self.vec_encoder = mlp(vec_dim, cfg.mlp_units, cfg.mlp_layers)
            self.vec_decoder = mlp(feat_dim, cfg.mlp_units, cfg.mlp_layers, vec_dim)
            embed += cfg.mlp_units
            # per-dimension scale of the vector observations (identity until set_obs_scale; saved
            # with the weights, so every stage that loads the model sees the same scale)
            self.register_buffer("vec_mean", torch.zeros(vec_dim))
            self.register_buffer("vec_std", torch.ones(vec_dim))
        self.embed_dim = embed
        self.reward_head = mlp(feat_dim, cfg.head_units, cfg.head_layers, cfg.reward_bins)
        self.cont_head = mlp(feat_dim, cfg.head_units, cfg.head_layers, 1)
        self.register_buffer("bins", twohot_bins(cfg.reward_bins), persistent=False)

    def _finish_init(self) -> None:
        """Initialise weights once every submodule exists (subclasses call this last)."""
        uniform_init_(self)
        zero_init_(self.reward_head[-1])

    def _split(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.reshape(*flat.shape[:-1], self.cfg.latent_vars, self.cfg.latent_classes)

    # -- shared pieces --------------------------------------------------------------------------
    MIN_OBS_STD = 1e-2  #: floor of a dimension's std in set_obs_scale (constant dims stay finite)

    def set_obs_scale(self, vectors: torch.Tensor) -> None:
        """Fix the per-dimension mean and std of the vector observations from ``vectors``
        [N, vec_dim] (the concatenated vector keys); only with ``cfg.obs_norm``."""
        if not self.cfg.obs_norm or not self.vector_keys:
            return
        vectors = torch.as_tensor(vectors, dtype=torch.float64)
        if vectors.ndim != 2 or vectors.shape[1] != self.vec_mean.shape[0] or vectors.shape[0] < 2:
            raise ValueError(f"observation scale needs [N>=2, {self.vec_mean.shape[0]}] vectors, got {list(vectors.shape)}")
        if not torch.isfinite(vectors).all():
            raise ValueError("observation scale: the data holds non-finite vector observations")
        self.vec_mean.copy_(vectors.mean(0).float())
        self.vec_std.copy_(vectors.std(0).clamp(min=self.MIN_OBS_STD).float())

    def _vec_in(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The concatenated vector observations as the model sees them (and reconstructs them)."""
        vec = torch.cat([batch[k].float() for k in self.vector_keys], -1)
        return symlog((vec - self.vec_mean) / self.vec_std)

    def encode(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.cnn(obs[k]) for k in self.image_keys]
        if self.vector_keys:
            parts.append(self.vec_encoder(self._vec_in(obs)))
        return torch.cat(parts, -1)

    def decode(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Observations decoded from features: images on the 0..255 scale, vectors raw."""
        out = {}
        for k in self.image_keys:
            out[k] = ((self.image_decoder(feat).float() + 0.5) * 255.0).clamp(0, 255)
        if self.vector_keys:
            vec, i = symexp(self.vec_decoder(feat).float()) * self.vec_std + self.vec_mean, 0
            for k in self.vector_keys:
                n = self.obs_spec[k][0][0]
                out[k], i = vec[..., i : i + n], i + n
        return out

    def reward(self, feat: torch.Tensor) -> torch.Tensor:
        return twohot_mean(self.reward_head(feat), self.bins)

    def cont(self, feat: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.cont_head(feat).squeeze(-1).float())

    # -- generic verbs --------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
             skip: tuple[str, ...] = ()):
        """World-model loss on a batch [B, T, ...]; returns (loss, metrics, observe outputs).

        Reconstruction (image MSE, symlog vector MSE), two-hot reward and Bernoulli continue
        terms from the posterior features, plus ``dyn_scale * dyn + rep_scale * rep`` with
        dyn = KL(sg(post) || prior) and rep = KL(post || sg(prior)), each clipped below at
        ``free_bits`` and masked at episode starts. Terms named in ``skip`` (e.g. ``reward``, as
        the DreamerV3-finetune baseline does) are reported but left out of the total.
        """
        obs = {k: batch[k] for k in self.obs_spec}
        out = self.observe(obs, batch["action"], batch["is_first"], generator=generator)
        total, metrics = self._compiled.get("loss_terms", self.loss_terms)(out["feat"], out["post_logp"],
                                                                         out["prior_logp"], batch, skip)
        return total, metrics, out

    def loss_terms(self, feat: torch.Tensor, post: torch.Tensor, prior: torch.Tensor,
                   batch: dict[str, torch.Tensor], skip: tuple[str, ...] = ()):
        """``loss`` from ``observe``'s features and posterior / prior log-probabilities on: the
        decoders, heads and KL terms, which ``use_compile`` runs as one compiled graph (forward
        and backward). Returns (total loss, metrics)."""
        cfg = self.cfg
        losses = {}
        if self.image_keys:
            target = batch[self.image_keys[0]].float() / 255.0 - 0.5
            losses["image"] = ((self.image_decoder(feat).float() - target) ** 2).sum((-1, -2, -3))
        if self.vector_keys:
            target = self._vec_in(batch)
            losses["vector"] = ((self.vec_decoder(feat).float() - target) ** 2).sum(-1)
        losses["reward"] = twohot_loss(self.reward_head(feat), batch["reward"].float(), self.bins)
        losses["cont"] = nn.functional.binary_cross_entropy_with_logits(
            self.cont_head(feat).squeeze(-1).float(), 1.0 - batch["is_terminal"].float(), reduction="none"
        )
        mask = (~batch["is_first"].bool()).float()
        dyn = categorical_kl(post.detach(), prior)
        rep = categorical_kl(post, prior.detach())
        denom = mask.sum().clamp(min=1.0)
        dyn_loss = (torch.clamp(dyn, min=cfg.free_bits) * mask).sum() / denom
        rep_loss = (torch.clamp(rep, min=cfg.free_bits) * mask).sum() / denom
        total = sum(v.mean() for k, v in losses.items() if k not in skip) + cfg.dyn_scale * dyn_loss + cfg.rep_scale * rep_loss
        metrics = {f"loss/{k}": v.mean().detach() for k, v in losses.items()}
        metrics.update({
            "loss/dyn": dyn_loss.detach(),
            "loss/rep": rep_loss.detach(),
            "wm/kl": ((dyn * mask).sum() / denom).detach(),
            "wm/post_entropy": -(post.exp() * post).sum((-1, -2)).mean().detach(),
        })
        return total, metrics

    IMAGINE_GRAD = False  #: True: ``imagine`` keeps the graph (the RSSM's backpropagated actor gradients)

    @staticmethod
    def chain_precision(device: torch.device):
        """The context ``observe``'s sequential chain runs in: fp32 on a CPU even under bf16
        autocast. The chain's products have the batch's 16 rows, where this CPU's fp32 products are
        faster than bf16 ones with their casts (``benchmarks/matmul_sizes.py``); the world-model
        loss forward + backward at the ``cpu`` preset: 140 -> 117 ms (docs/performance.md)."""
        if device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            return torch.autocast("cpu", enabled=False)
        return contextlib.nullcontext()

    def imagine(self, policy, start, horizon: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        with contextlib.nullcontext() if self.IMAGINE_GRAD else torch.no_grad():
            return self._imagine(policy, start, horizon, generator)

    def _imagine(self, policy, start, horizon: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Roll ``policy`` out in the latent dynamics from ``start`` ([N, ...]).

        ``policy`` is a ``features -> action`` callable, or an ``ImaginationPolicy`` (an actor's
        samples from noise it is given): then each step's random numbers (the action noise, then
        the latent sample's uniforms, as the callable path draws them) come from ``generator``
        outside the steps, which run ``IMAGINE_CHUNK`` at a time (``imagine_steps``), compiled
        when ``use_compile`` switched that on.
        Returns ``feat`` [H+1, N, F] (feat[0] from start), ``action`` [H, N, A] (taken at step t, as
        the policy returned it: ``step`` clips actions to [-1, 1] itself),
        and ``reward`` and ``cont`` [H, N] predicted at step t+1.
        """
        fused = hasattr(policy, "sample")
        if not fused:
            feats, actions, prev = [self.features(start)], [], start
            for _ in range(horizon):
                action = policy(feats[-1])
                prev, _ = self.step(prev, action, generator)
                feats.append(self.features(prev))
                actions.append(action)
            feat, action = torch.stack(feats), torch.stack(actions)
        else:
            prev = type(start)(*(x.contiguous() for x in start))
            feat = self.features(prev)
            steps = self._compiled.get("imagine_steps", self.imagine_steps)
            feats, actions, N = [feat[None]], [], feat.shape[0]
            for first in range(0, horizon, self.IMAGINE_CHUNK):
                # the chunk's random numbers in the order the step-by-step loop draws them: each
                # step's action noise, then its latent sample's uniforms
                draws = [(torch.randn((N, policy.action_size), generator=generator, device=feat.device),
                          torch.rand((N, self.cfg.latent_vars), generator=generator, device=feat.device))
                         for _ in range(min(self.IMAGINE_CHUNK, horizon - first))]
                prev, chunk_feat, chunk_action = steps(policy, prev, feat, torch.stack([n for n, _ in draws]),
                                                       torch.stack([u for _, u in draws]))
                feat = chunk_feat[-1]
                feats.append(chunk_feat)
                actions.append(chunk_action)
            feat, action = torch.cat(feats), torch.cat(actions)
        return {"feat": feat, "action": action, **self._compiled.get("heads", self.heads)(feat[1:])}

    #: imagined steps per call of ``imagine_steps``: compiled, one graph of this many steps (the
    #: per-call overhead of a compiled region, ~0.2 ms, paid once per chunk instead of per step:
    #: imagination at the ``cpu`` preset ~55 -> ~46 ms per update, docs/performance.md; the compile
    #: takes longer the more steps a graph holds). A horizon that is not a multiple ends with a
    #: shorter chunk, a second graph.
    IMAGINE_CHUNK = 8

    def imagine_steps(self, policy, prev, feat: torch.Tensor, noise: torch.Tensor, uniform: torch.Tensor):
        """``len(noise)`` imagined transitions (``imagine_step`` with ``noise[k]``, ``uniform[k]``).
        Returns (the last state, the features [k, N, F] and actions [k, N, A] of every step)."""
        feats, actions = [], []
        for k in range(noise.shape[0]):
            prev, feat, action = self.imagine_step(policy, prev, feat, noise[k], uniform[k])
            feats.append(feat)
            actions.append(action)
        return prev, torch.stack(feats), torch.stack(actions)

    def imagine_step(self, policy, prev, feat: torch.Tensor, noise: torch.Tensor, uniform: torch.Tensor):
        """One imagined transition: the policy's action from ``noise``, the next state sampled
        with ``uniform``. Returns (next state, its features, the action)."""
        action = policy.sample(feat, noise)
        nxt, _ = self.step(prev, action, uniform=uniform)
        nxt = type(nxt)(*(x.contiguous() for x in nxt))  # one memory layout at every step: one compiled graph
        return nxt, self.features(nxt), action

    def heads(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predicted reward and continue probability for features ``feat``."""
        return {"reward": self.reward(feat), "cont": self.cont(feat)}

    #: what ``use_compile`` compiles. ``observe``'s prior chain stays eager: compiled, its 64 small
    #: steps at batch 16 ran no faster (docs/performance.md) and cost two more compilations; it runs
    #: in fp32 instead (``chain_precision``)
    COMPILED = ("imagine_steps", "heads", "loss_terms")

    @torch.no_grad()
    def open_loop(self, obs, action, is_first, context: int, generator: torch.Generator | None = None):
        """Filter the first ``context`` steps, then predict the rest from the recorded actions alone.

        Returns ``feat`` [B, T - context, F] for steps ``context..T-1``, the open-loop priors'
        ``prior_logp`` [B, T - context, S, K] and the decoded predictions ``pred`` beside the
        true observations ``truth``.
        """
        T = action.shape[1]
        if not 0 < context < T:
            raise ValueError(f"context must be in 1..{T - 1}, got {context}")
        head = {k: v[:, :context] for k, v in obs.items()}
        prev = self.observe(head, action[:, :context], is_first[:, :context], generator=generator)["state"]
        feats, logps = [], []
        for t in range(context, T):
            prev, logp = self.step(prev, action[:, t], generator)
            feats.append(self.features(prev))
            logps.append(logp)
        feat = torch.stack(feats, 1)
        return {"feat": feat, "prior_logp": torch.stack(logps, 1), "pred": self.decode(feat),
                "truth": {k: v[:, context:] for k, v in obs.items()}}

"""Adapting a pretrained agent to the target system: ReDRAW and the baselines (docs/method.md#baselines).

Every method trains offline on the same target data; what it trains and freezes:

============== ============ ========================================= ================================
method         world model  trains (everything else frozen)           loss
============== ============ ========================================= ================================
redraw         DRAW         a new latent residual only, Adam 1e-2      KL(sg(post) || corrected prior),
                                                                       no free bits, members summed
redraw_        DRAW         as redraw, an ensemble of pessimism.       as redraw; the policy stage
pessimistic                 members residuals                          penalises their disagreement
draw_finetune  DRAW         prior MLP + initial logits, Adam 1e-4      1.5 x dyn KL, free bits 1
dreamer_       RSSM         GRU (+ its input layer), prior, posterior, the world-model loss minus the
finetune                    initial state, Adam 1e-4                   reward term
no_adapt       DRAW         nothing: the source policy as it is
============== ============ ========================================= ================================

The policy stage then re-initialises the actor-critic for ``redraw`` and keeps (and trains
on) the pretrained one for the finetune baselines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from redraw.agent.dreamer import Agent
from redraw.models.dists import categorical_kl, class_log_softmax
from redraw.perf import eager
from redraw.models.draw import DRAW
from redraw.models.residual import ResidualConfig
from redraw.models.rssm import RSSM

#: method -> the world model it adapts (the pretraining stage that provides it)
CALIBRATED = {"redraw": "draw", "draw_finetune": "draw", "dreamer_finetune": "rssm", "redraw_pessimistic": "draw"}
#: every method of the results table, in its order; ``oracle`` is the reference trained in the target
METHODS = ("no_adapt", "draw_finetune", "dreamer_finetune", "redraw", "redraw_pessimistic")
REINIT_ACTOR_CRITIC = {"redraw", "redraw_pessimistic"}
RESIDUAL_METHODS = {"redraw", "redraw_pessimistic"}  #: the methods that calibrate a latent residual


def check_method(method: str, allowed=METHODS) -> str:
    if method not in allowed:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(allowed)}")
    return method


@dataclass
class CalibrateConfig:
    """Section ``calibrate`` of params.yaml."""

    updates: int = 2000  #: gradient steps on the target data
    batch_size: int = 16
    batch_length: int = 64
    finetune_lr: float = 1e-4  #: draw_finetune / dreamer_finetune learning rate
    holdout_episodes: int = 2  #: target episodes kept out of training for the dynamics-gap report
    gap_context: int = 5  #: observed steps before the open-loop part of the report
    gap_horizon: int = 32  #: open-loop horizons 1..H of the report
    log_every: int = 50
    #: measure the held-out dynamics error every N updates (0: only before and after): the curve
    #: of held-out error vs adaptation updates (reports/calibrate/<method>_heldout.json)
    gap_every: int = 0
    #: keep the weights of the measured point with the lowest held-out open-loop KL instead of the
    #: last ones (early stopping on the held-out target episodes; needs gap_every)
    early_stop: bool = False
    checkpoint_every: int = 1000  #: updates between checkpoints of the run (it resumes from the last)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


class Calibrator:
    """Freezes ``agent``'s world model, makes the method's trainable part, and trains it."""

    def __init__(self, agent: Agent, method: str, cfg: CalibrateConfig, residual: ResidualConfig | None,
                 resume: bool = False, episodes: int = 0, seed: int = 0):
        """``resume``: train on the agent's calibrated part as it is (its residual, for the residual
        methods: the policy stage's concurrent schedule) instead of attaching a fresh residual.
        ``episodes`` and ``seed``: the replay's episodes and the seed the bootstrap weights of a
        ``residual.bootstrap`` ensemble are drawn for (batches then carry ``episode``)."""
        check_method(method, tuple(CALIBRATED))
        self.agent, self.method, self.cfg = agent, method, cfg
        wm = agent.wm
        want = CALIBRATED[method]
        if agent.cfg.world_model != want:
            raise ValueError(f"method {method} adapts a {want} world model, the checkpoint holds {agent.cfg.world_model}")
        wm.requires_grad_(False)
        agent.requires_grad_(False)
        lr, eps, clip = cfg.finetune_lr, wm.cfg.eps, wm.cfg.grad_clip
        if method in RESIDUAL_METHODS:
            if not resume:
                agent.attach_residual(residual)
            elif wm.residual is None:
                raise ValueError(f"method {method}: the agent has no residual to train on")
            residual = wm.residual.cfg
            params = list(wm.residual.parameters())
            lr, eps, clip = residual.lr, residual.eps, residual.grad_clip
        elif method == "draw_finetune":
            assert isinstance(wm, DRAW)
            params = [*wm.prior.parameters(), wm.init_logits]
        else:
            assert isinstance(wm, RSSM)
            params = [*wm.img_in.parameters(), *wm.gru.parameters(), *wm.prior.parameters(),
                      *wm.posterior.parameters(), wm.init_deter]
        for p in params:
            p.requires_grad_(True)
        self.params, self.clip = params, clip
        #: [members, episodes] bootstrap weights (None: every member weighs every episode 1)
        self.boot: torch.Tensor | None = None
        if method in RESIDUAL_METHODS and residual.bootstrap and residual.members > 1:
            if episodes < 1:
                raise ValueError("a bootstrapped residual ensemble needs the number of target episodes")
            draws = np.random.default_rng([seed, 0xB00]).poisson(1.0, (residual.members, episodes))
            self.boot = torch.as_tensor(draws, dtype=torch.float32, device=agent.device)
        self.opt = torch.optim.Adam(params, lr, eps=eps)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        wm, gen = self.agent.wm, self.agent.generator
        obs = {k: batch[k] for k in wm.obs_spec}
        mask = (~batch["is_first"].bool()).float()
        if self.method == "dreamer_finetune":
            loss, metrics, _ = wm.loss(batch, generator=gen, skip=("reward",))
            return loss, {k: v for k, v in metrics.items() if k != "loss/reward"}
        out = wm.observe(obs, batch["action"], batch["is_first"], generator=gen)
        post = out["post_logp"].detach()
        if self.method in RESIDUAL_METHODS:
            # KL(sg(post) || softmax(prior raw logits + member)), no free bits, members summed
            base = out["prior_base"].detach()
            kls = [categorical_kl(post, class_log_softmax(base + m)) for m in out["residual_members"]]
            if self.boot is None:
                loss = sum(masked_mean(kl, mask) for kl in kls)
            else:  # member m weighs each chunk by its bootstrap count of the chunk's episode
                w = self.boot[:, batch["episode"]]  # [M, B]
                loss = sum(masked_mean(kl, mask * w[m][:, None]) for m, kl in enumerate(kls))
            return loss, {"calib/kl": masked_mean(categorical_kl(post, out["prior_logp"]), mask).detach()}
        dyn = categorical_kl(post, out["prior_logp"])
        loss = wm.cfg.dyn_scale * masked_mean(torch.clamp(dyn, min=wm.cfg.free_bits), mask)
        return loss, {"calib/kl": masked_mean(dyn, mask).detach()}

    @property
    def needs_episode(self) -> bool:
        """Whether batches must carry ``episode`` (``Replay.sample(..., with_episode=True)``)."""
        return self.boot is not None

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        batch = {k: v.to(self.agent.device, non_blocking=True) for k, v in batch.items()}
        with self.agent._autocast():
            loss, metrics = self.loss(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        metrics["grad/calib"] = nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        metrics["loss/calib"] = loss.detach()
        return {k: float(v) for k, v in metrics.items()}


@torch.no_grad()
def dynamics_gap(agent: Agent, batch: dict[str, torch.Tensor], context: int, seed: int) -> dict:
    """How well the agent's world model predicts held-out target chunks ``batch`` [B, T, ...].

    ``kl_filter``: mean one-step KL(post || prior) while filtering the whole chunk (the
    quantity calibration minimises). Per open-loop horizon h = 1..T-context after ``context``
    observed steps: ``kl`` = KL(filtered posterior || open-loop prior) and ``mse`` = the decoded
    observations' squared error (images on a 0..1 scale), plus the decoded predictions.
    """
    wm = agent.wm
    batch = {k: v.to(agent.device) for k, v in batch.items()}
    obs = {k: batch[k] for k in wm.obs_spec}
    gen = torch.Generator(device=agent.device).manual_seed(seed)
    with agent._autocast(), eager(wm):  # a one-off report: not worth a compilation for its shapes
        full = wm.observe(obs, batch["action"], batch["is_first"], generator=gen)
        mask = (~batch["is_first"].bool()).float()
        kl_filter = masked_mean(categorical_kl(full["post_logp"].float(), full["prior_logp"].float()), mask)
        ol = wm.open_loop(obs, batch["action"], batch["is_first"], context, generator=gen)
    kl = categorical_kl(full["post_logp"][:, context:].float(), ol["prior_logp"].float()).mean(0)
    err = 0.0
    for k, truth in ol["truth"].items():
        e = (ol["pred"][k].float() - truth.float()) ** 2
        if truth.dtype == torch.uint8:
            e = e / 255.0**2
        err = err + e.reshape(*e.shape[:2], -1).mean(-1)
    return {"kl_filter": float(kl_filter), "kl": kl.tolist(), "mse": err.mean(0).tolist(),
            "pred": ol["pred"], "truth": ol["truth"]}

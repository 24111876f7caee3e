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
on) the pretrained one for the finetune baselines. Each method's part is in its module of
``redraw.methods``; the ``Calibrator`` reads the registry there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from redraw import methods
from redraw.agent.agent import Agent
from redraw.methods.base import masked_mean
from redraw.models.dists import categorical_kl
from redraw.models.residual import ResidualConfig
from redraw.perf import eager

#: method -> the world model it adapts (the pretraining stage that provides it), as registered
#: when this module was imported (``redraw.methods.calibrated()`` reads the registry as it is now)
CALIBRATED = {m: methods.REGISTRY[m].world_model for m in methods.calibrated()}
#: the adaptation methods of the results table, in its order; ``oracle`` is the reference trained in the target
METHODS = methods.transfer()
REINIT_ACTOR_CRITIC = set(methods.names(lambda m: m.reinit_actor_critic))
RESIDUAL_METHODS = set(methods.names(lambda m: m.residual))  #: the methods that calibrate a latent residual


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


class Calibrator:
    """Freezes ``agent``'s world model, makes the method's trainable part, and trains it."""

    def __init__(self, agent: Agent, method: str, cfg: CalibrateConfig, residual: ResidualConfig | None,
                 resume: bool = False, episodes: int = 0, seed: int = 0):
        """``resume``: train on the agent's calibrated part as it is (its residual, for the residual
        methods: the policy stage's concurrent schedule) instead of attaching a fresh residual.
        ``episodes`` and ``seed``: the replay's episodes and the seed the bootstrap weights of a
        ``residual.bootstrap`` ensemble are drawn for (batches then carry ``episode``)."""
        spec = methods.get(method, methods.calibrated())
        self.agent, self.method, self.cfg, self.spec = agent, method, cfg, spec
        if agent.cfg.world_model != spec.world_model:
            raise ValueError(f"method {method} adapts a {spec.world_model} world model, the checkpoint holds "
                             f"{agent.cfg.world_model}")
        agent.wm.requires_grad_(False)
        agent.requires_grad_(False)
        part = spec.trainable(agent, cfg, residual, method=method, resume=resume, episodes=episodes, seed=seed)
        for p in part.params:
            p.requires_grad_(True)
        self.params, self.clip = part.params, part.clip
        #: [members, episodes] bootstrap weights (None: every member weighs every episode 1)
        self.boot: torch.Tensor | None = part.boot
        self.opt = torch.optim.Adam(part.params, part.lr, eps=part.eps)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's calibration loss on ``batch`` (``redraw.methods``) and its metrics."""
        return self.spec.loss(self.agent, batch, self.boot)

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

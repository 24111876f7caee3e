"""``draw_finetune`` (a baseline): the DRAW model's prior MLP and initial logits finetuned on the
target data (Adam at ``calibrate.finetune_lr``) with the pretraining's dynamics loss, 1.5 x KL with
free bits 1; the policy stage keeps the pretrained actor-critic and trains on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from redraw.methods.base import Method, Trainable, masked_mean, observe_target

if TYPE_CHECKING:
    import torch


def trainable(agent, cfg, residual, **_) -> Trainable:
    from redraw.models.draw import DRAW

    wm = agent.wm
    assert isinstance(wm, DRAW)
    return Trainable([*wm.prior.parameters(), wm.init_logits], cfg.finetune_lr, wm.cfg.eps, wm.cfg.grad_clip)


def loss(agent, batch: dict[str, torch.Tensor], boot=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    import torch

    from redraw.models.dists import categorical_kl

    wm = agent.wm
    out, post, mask = observe_target(agent, batch)
    dyn = categorical_kl(post, out["prior_logp"])
    return (wm.cfg.dyn_scale * masked_mean(torch.clamp(dyn, min=wm.cfg.free_bits), mask),
            {"calib/kl": masked_mean(dyn, mask).detach()})


DRAW_FINETUNE = Method("draw_finetune", trainable=trainable, loss=loss)

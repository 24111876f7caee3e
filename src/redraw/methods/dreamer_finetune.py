"""``dreamer_finetune`` (a baseline): DreamerV3's RSSM (its own pretraining, ``pretrain_rssm``)
finetuned on the target data: the GRU with its input layer, the prior, the posterior and the
initial state, with the world-model loss minus the reward term (Adam at ``calibrate.finetune_lr``);
the policy stage keeps the pretrained actor-critic and trains on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from redraw.methods.base import Method, Trainable

if TYPE_CHECKING:
    import torch


def trainable(agent, cfg, residual, **_) -> Trainable:
    from redraw.models.rssm import RSSM

    wm = agent.wm
    assert isinstance(wm, RSSM)
    params = [*wm.img_in.parameters(), *wm.gru.parameters(), *wm.prior.parameters(), *wm.posterior.parameters(),
              wm.init_deter]
    return Trainable(params, cfg.finetune_lr, wm.cfg.eps, wm.cfg.grad_clip)


def loss(agent, batch: dict[str, torch.Tensor], boot=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss, metrics, _ = agent.wm.loss(batch, generator=agent.generator, skip=("reward",))
    return loss, {k: v for k, v in metrics.items() if k != "loss/reward"}


DREAMER_FINETUNE = Method("dreamer_finetune", world_model="rssm", trainable=trainable, loss=loss)

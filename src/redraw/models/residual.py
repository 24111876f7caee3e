"""The latent residual of ReDRAW (docs/method.md#the-latent-residual).

A small network on ``[previous sample z (one-hot, flattened), previous action]``:
Linear(hidden) + LayerNorm + SiLU -> Linear(latent_vars * latent_classes). Its output is added
to the DRAW prior's *raw* logits; the corrected distribution has no uniform mix and its softmax
is the next belief (see ``DRAW.dynamics_step``). The output layer keeps its ordinary
initialisation (not zero). An ensemble averages its members in logit space; calibration sums
the members' losses (``members`` gives them one by one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from redraw.models.networks import mlp, uniform_init_


@dataclass
class ResidualConfig:
    """Residual size and calibration optimiser (section ``calibrate.residual`` of params.yaml)."""

    hidden: int = 256  #: width of the one hidden layer
    members: int = 1  #: ensemble size (paper: 1)
    lr: float = 1e-2  #: Adam, 100x the world-model rate
    eps: float = 1e-8
    grad_clip: float = 1000.0
    #: members train on bootstrap resamples of the target episodes (Poisson(1) weights per member
    #: and episode, fixed by the seed) instead of all on the same data (pessimism.bootstrap)
    bootstrap: bool = False


class LatentResidual(nn.Module):
    def __init__(self, latent_vars: int, latent_classes: int, action_size: int, cfg: ResidualConfig):
        super().__init__()
        if cfg.members < 1:
            raise ValueError(f"calibrate.residual.members must be at least 1, got {cfg.members}")
        self.cfg, self.shape = cfg, (latent_vars, latent_classes)
        D = latent_vars * latent_classes
        self.nets = nn.ModuleList(mlp(D + action_size, cfg.hidden, 1, D) for _ in range(cfg.members))
        uniform_init_(self)

    def members(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Every member's logit correction: z [..., S*K], action [..., A] -> [M, ..., S, K]."""
        x = torch.cat([z, action], -1)
        return torch.stack([self._correction(net, x) for net in self.nets])

    def member(self, m: int, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Member ``m``'s logit correction alone: z [..., S*K], action [..., A] -> [..., S, K]."""
        return self._correction(self.nets[m], torch.cat([z, action], -1))

    def _correction(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net(x).reshape(*x.shape[:-1], *self.shape)

    def forward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The ensemble's correction (members averaged in logit space): [..., S, K]."""
        return self.members(z, action).mean(0)

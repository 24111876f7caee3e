"""Uncertainty-aware ReDRAW (method ``redraw_pessimistic``, beyond the paper; docs/residual.md).

Calibration trains an ensemble of latent residuals (``pessimism.members``, each member initialised
differently and, with ``pessimism.bootstrap``, on its own bootstrap resample of the target
episodes; their losses summed as for ``redraw``); the world model uses their mean in logit
space. Where the members disagree the corrected model is not backed by the target data, and the
policy stage pays for going there:

- ``penalty`` (MOPO-style): each imagined reward becomes ``reward - penalty * disagreement`` of
  the transition that led to it;
- ``truncate`` (MOReL-style): an imagined rollout ends (its continue flag drops to 0) at the first
  transition whose disagreement exceeds ``threshold``.

The disagreement of a transition from sample z with action a is the members' spread in the space
they are averaged in: the RMS over latent variables and classes of the members' standard
deviation of their (per-variable centred) logit corrections, computed from pairwise differences,
so identical members give exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("penalty", "truncate")


@dataclass
class PessimismConfig:
    """Section ``pessimism`` of params.yaml (method ``redraw_pessimistic`` only)."""

    members: int = 5  #: residual ensemble size
    mode: str = "penalty"  #: penalty (reward - penalty * disagreement) | truncate (end rollouts)
    penalty: float = 1.0  #: lambda of the penalty mode (nats of reward per logit of disagreement)
    threshold: float = 1.0  #: truncate mode: the disagreement above which an imagined rollout ends
    #: each member calibrates on its own bootstrap resample of the target episodes (Poisson(1)
    #: weights per episode), not only from its own initialisation
    bootstrap: bool = False


def pessimism_config(params: dict, path: str = "params.yaml") -> PessimismConfig:
    """``PessimismConfig`` from params.yaml, refused naming the file and key where it is wrong."""
    from redraw.config import ConfigError, section

    cfg = section(params, "pessimism", PessimismConfig, path)
    if not isinstance(cfg.members, int) or isinstance(cfg.members, bool) or cfg.members < 1:
        raise ConfigError(f"{path}: pessimism.members must be a whole number >= 1, got {cfg.members!r}")
    if not isinstance(cfg.bootstrap, bool):
        raise ConfigError(f"{path}: pessimism.bootstrap must be true or false, got {cfg.bootstrap!r}")
    if cfg.bootstrap and cfg.members == 1:
        raise ConfigError(f"{path}: pessimism.bootstrap needs an ensemble, but pessimism.members is 1")
    if cfg.mode not in MODES:
        raise ConfigError(f"{path}: pessimism.mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    if not cfg.penalty >= 0:
        raise ConfigError(f"{path}: pessimism.penalty must be >= 0, got {cfg.penalty!r}")
    if cfg.mode == "truncate" and not cfg.threshold > 0:
        raise ConfigError(f"{path}: pessimism.threshold must be > 0 in mode truncate, got {cfg.threshold!r}")
    acts = cfg.penalty > 0 if cfg.mode == "penalty" else True
    if acts and cfg.members == 1:
        key = "pessimism.penalty" if cfg.mode == "penalty" else "pessimism.mode"
        raise ConfigError(f"{path}: {key} needs an ensemble to measure disagreement, but pessimism.members is 1 "
                          "(set it to 2 or more)")
    return cfg


def disagreement(residual, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """The members' disagreement on transitions from samples ``feat`` [..., S*K] with ``action``
    [..., A] -> [...] (see the module's docstring); 0 for a single member."""
    return member_spread(residual.members(feat, action.clamp(-1, 1)))


def member_spread(corrections: torch.Tensor) -> torch.Tensor:
    """``disagreement`` from the members' logit corrections [M, ..., S, K] -> [...] (e.g. those
    ``observe`` returns as ``residual_members``)."""
    c = corrections.float()
    c = c - c.mean(-1, keepdim=True)  # a logit shift common to a variable's classes changes nothing
    M = c.shape[0]
    if M == 1:
        return torch.zeros(c.shape[1:-2], device=c.device)
    pairs = [(c[i] - c[j]).pow(2) for i in range(M) for j in range(i + 1, M)]
    var = torch.stack(pairs).sum(0) / (M * (M - 1))  # the unbiased variance over members
    return var.mean((-1, -2)).sqrt()


def pessimistic(traj: dict[str, torch.Tensor], residual, cfg: PessimismConfig):
    """``traj`` (from ``imagine``) with its rewards penalised or its rollouts ended where the
    residual ensemble disagrees; returns (new traj, metrics)."""
    with torch.no_grad():  # imagination is data for the actor-critic, as the rewards themselves
        dis = disagreement(residual, traj["feat"][:-1], traj["action"])  # [H, N]: transition t -> t+1
    traj = dict(traj)
    metrics = {"pessimism/disagreement": dis.mean(), "pessimism/disagreement_max": dis.max()}
    if cfg.mode == "penalty":
        traj["reward"] = traj["reward"] - cfg.penalty * dis.to(traj["reward"].dtype)
    else:
        high = dis > cfg.threshold
        traj["cont"] = torch.where(high, torch.zeros_like(traj["cont"]), traj["cont"])
        metrics["pessimism/truncated"] = high.float().mean()
    return traj, metrics

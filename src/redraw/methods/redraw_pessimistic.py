"""``redraw_pessimistic``: uncertainty-aware ReDRAW (beyond the paper; docs/residual.md).

Calibration trains an ensemble of latent residuals (``pessimism.members``, each member initialised
differently and, with ``pessimism.bootstrap``, on its own bootstrap resample of the target
episodes; their losses summed as for ``redraw``); the world model uses their mean in logit
space. Where the members disagree the corrected model is not backed by the target data, and the
policy stage pays for going there:

- ``penalty`` (MOPO-style): each imagined reward becomes ``reward - penalty * disagreement`` of
  the transition that led to it;
- ``truncate`` (MOReL-style): an imagined rollout ends (its continue flag drops to 0) at the first
  transition whose disagreement exceeds ``threshold``.

What disagreement means is ``measure``:

- ``transition``: the disagreement of a transition from sample z with action a is the members'
  spread in the space they are averaged in: the RMS over latent variables and classes of the
  members' standard deviation of their (per-variable centred) logit corrections, computed from
  pairwise differences, so identical members give exactly zero;
- ``rollouts``: every member also rolls out on its own (its correction alone on the prior) from the
  imagination's start states, with the imagined actions and the same random numbers; the
  disagreement of step t is the mean KL between every ordered pair of the members' priors over
  the state after it (nats; identical members: zero). With the recorded actions of real
  episodes these rollouts drift apart 3-4x more where the policy takes the real system than on
  the target data, as the model's error grows; along the policy's own imagination they stay as
  close as on the data, as the one-step spread does (docs/residual.md, reacher seed 1), so on
  that pair it is not expected to help either. It costs one more prior rollout per member, and
  its scale (nats, growing over the horizon) wants a smaller ``penalty`` than ``transition``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from redraw.methods import redraw
from redraw.methods.base import Method

if TYPE_CHECKING:
    import torch

MODES = ("penalty", "truncate")
MEASURES = ("transition", "rollouts")


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
    #: what disagreement is: transition (the members' one-step spread) | rollouts (how far the
    #: members' own rollouts from the same start drift apart; see the module's docstring)
    measure: str = "transition"


def pessimism_config(params: dict, path: str = "params.yaml") -> PessimismConfig:
    """``PessimismConfig`` from params.yaml, refused naming the file and key where it is wrong."""
    from redraw.config import ConfigError, is_count, section

    cfg = section(params, "pessimism", PessimismConfig, path)
    if not is_count(cfg.members, 1):
        raise ConfigError(f"{path}: pessimism.members must be a whole number >= 1, got {cfg.members!r}")
    if not isinstance(cfg.bootstrap, bool):
        raise ConfigError(f"{path}: pessimism.bootstrap must be true or false, got {cfg.bootstrap!r}")
    if cfg.bootstrap and cfg.members == 1:
        raise ConfigError(f"{path}: pessimism.bootstrap needs an ensemble, but pessimism.members is 1")
    if cfg.measure not in MEASURES:
        raise ConfigError(f"{path}: pessimism.measure must be one of {', '.join(MEASURES)}, got {cfg.measure!r}")
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
    import torch

    c = corrections.float()
    c = c - c.mean(-1, keepdim=True)  # a logit shift common to a variable's classes changes nothing
    M = c.shape[0]
    if M == 1:
        return torch.zeros(c.shape[1:-2], device=c.device)
    pairs = [(c[i] - c[j]).pow(2) for i in range(M) for j in range(i + 1, M)]
    var = torch.stack(pairs).sum(0) / (M * (M - 1))  # the unbiased variance over members
    return var.mean((-1, -2)).sqrt()


def pairwise_kl(logps: torch.Tensor) -> torch.Tensor:
    """Mean KL(p_i || p_j) over the ordered pairs of members i != j: logps [M, ..., S, K] -> [...]."""
    import torch

    from redraw.models.dists import categorical_kl

    M = logps.shape[0]
    if M == 1:
        return torch.zeros(logps.shape[1:-2], device=logps.device)
    return torch.stack([categorical_kl(logps[i], logps[j]) for i in range(M) for j in range(M) if i != j]).mean(0)


def member_rollouts(wm, start, actions: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Each member of ``wm``'s residual rolling out on its own from ``start`` (a latent state
    [N, ...]) with ``actions`` [H, N, A] and the latent samples' random numbers ``uniforms``
    [H, N, S], the same for every member -> every member's prior at every step [M, H, N, S, K]."""
    import torch

    from redraw.models.base import sample_classes
    from redraw.models.dists import class_softmax

    M, logps = len(wm.residual.nets), []
    for m in range(M):
        prev, mine = start, []
        for t in range(actions.shape[0]):
            a = actions[t].clamp(-1, 1)
            raw, logp = wm.dynamics_step(a, prev, wm.residual.member(m, prev.z.flatten(-2), a))
            prev = type(prev)(class_softmax(raw), sample_classes(logp, None, uniforms[t]))
            mine.append(logp)
        logps.append(torch.stack(mine))
    return torch.stack(logps)


def pessimistic(traj: dict[str, torch.Tensor], wm, cfg: PessimismConfig, start=None,
                generator: torch.Generator | None = None):
    """``traj`` (from ``imagine`` of ``wm`` from ``start``) with its rewards penalised or its
    rollouts ended where the residual ensemble disagrees (by ``cfg.measure``; ``rollouts`` needs
    ``start`` and draws its random numbers from ``generator``); returns (new traj, metrics)."""
    import torch

    with torch.no_grad():  # imagination is data for the actor-critic, as the rewards themselves
        if cfg.measure == "rollouts":
            if start is None:
                raise ValueError("pessimism.measure rollouts needs the imagination's start states")
            H, N = traj["action"].shape[:2]
            uniforms = torch.rand((H, N, wm.cfg.latent_vars), generator=generator, device=traj["action"].device)
            dis = pairwise_kl(member_rollouts(wm, start, traj["action"], uniforms).float())  # [H, N]
        else:
            dis = disagreement(wm.residual, traj["feat"][:-1], traj["action"])  # [H, N]: transition t -> t+1
    traj = dict(traj)
    metrics = {"pessimism/disagreement": dis.mean(), "pessimism/disagreement_max": dis.max()}
    if cfg.mode == "penalty":
        traj["reward"] = traj["reward"] - cfg.penalty * dis.to(traj["reward"].dtype)
    else:
        high = dis > cfg.threshold
        traj["cont"] = torch.where(high, torch.zeros_like(traj["cont"]), traj["cont"])
        metrics["pessimism/truncated"] = high.float().mean()
    return traj, metrics


# -- the method: calibration's ensemble, the policy stage's pessimism -----------------------------------
def residual_settings(residual, params: dict, path: str):
    """calibrate@: ``calibrate.residual`` as an ensemble of ``pessimism.members`` residuals (with
    ``pessimism.bootstrap``), whose disagreement the policy stage uses."""
    pess = pessimism_config(params, path)
    return replace(residual, members=pess.members, bootstrap=pess.bootstrap)


def policy_setup(agent, params: dict, path: str, model_path) -> None:
    """train_policy@: the agent penalises (or ends) its imagination where the ensemble disagrees
    (``Agent.pessimism``); refused where the calibrated model holds another ensemble size."""
    from redraw.config import ConfigError

    agent.pessimism = pessimism_config(params, path)
    if agent.wm.residual.cfg.members != agent.pessimism.members:
        raise ConfigError(f"{model_path} holds {agent.wm.residual.cfg.members} residual members, {path} "
                          f"pessimism.members is {agent.pessimism.members}; re-run calibrate@redraw_pessimistic")


REDRAW_PESSIMISTIC = Method("redraw_pessimistic", role="redraw", paper=False, trainable=redraw.trainable,
                            loss=redraw.loss, residual=True, reinit_actor_critic=True,
                            residual_settings=residual_settings, policy_setup=policy_setup)

"""What a method is (``Method``) and what its calibration trains (``Trainable``); the registry lives
in ``redraw.methods``.

This layer sits below ``redraw.agent``: a method reaches the agent only through the object it is
handed (``attach_residual``, ``pessimism``), never by importing it. The registry is read by light
code too (the command line, the records), so a method's module imports torch and the models only
inside the functions that compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch

ROLES = ("redraw", "baseline", "reference")
WORLD_MODELS = {"draw": "pretrain", "rssm": "pretrain_rssm"}  #: world model -> the training that provides it


@dataclass
class Trainable:
    """What a method's calibration trains on the target data (everything else of the agent frozen)."""

    params: list  #: the tensors it trains
    lr: float  #: Adam's learning rate
    eps: float  #: Adam's epsilon
    clip: float  #: gradient-norm clip
    #: [members, episodes] bootstrap weights of a residual ensemble (None: every member weighs every episode 1)
    boot: torch.Tensor | None = None


@dataclass(frozen=True)
class Method:
    """One row of the results table: an adaptation method, or a reference (``role`` ``reference``).

    A method with a ``trainable`` calibrates (DVC stages ``calibrate@NAME`` and ``train_policy@NAME``);
    every method is evaluated (``evaluate@NAME``) with the policy at ``policy`` in the env of ``env``.
    """

    name: str
    #: redraw (ReDRAW and its variants) | baseline (the paper's baselines) | reference (source, oracle)
    role: str = "baseline"
    paper: bool = True  #: one of the paper's comparison (false: beyond it, run on request)
    label: str = ""  #: its name in the reports (default: ``name``)
    #: the pretrained world model it adapts (or whose policy it runs): draw | rssm
    world_model: str = "draw"
    #: the training its policy starts from (a record's validity; default: the world model's pretraining)
    training: str = ""
    policy: str = ""  #: the checkpoint evaluate@ runs (default: train_policy@NAME's, models/policy/NAME/agent.pt)
    env: str = "env.target"  #: the params key of the env evaluate@ runs it in
    #: calibration: (agent, cfg, residual, *, method, resume, episodes, seed) -> Trainable; None: no calibration
    trainable: Callable[..., Trainable] | None = None
    #: calibration loss: (agent, batch, boot) -> (loss, metrics)
    loss: Callable[..., tuple[torch.Tensor, dict]] | None = None
    residual: bool = False  #: calibrates a latent residual (calibrate.residual; train_policy.residual_imag_starts)
    reinit_actor_critic: bool = False  #: the policy stage starts from a fresh actor-critic, not the pretrained one
    #: calibrate@: (calibrate.residual's ResidualConfig, params, path) -> the ResidualConfig it calibrates
    residual_settings: Callable[[Any, dict, str], Any] | None = None
    #: train_policy@: (agent, params, path, calibrated model path) -> None, after the agent is set up
    policy_setup: Callable[[Any, dict, str, Any], None] | None = None

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"method {self.name}: role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.world_model not in WORLD_MODELS:
            raise ValueError(f"method {self.name}: world_model must be one of {', '.join(WORLD_MODELS)}")
        if (self.trainable is None) != (self.loss is None):
            raise ValueError(f"method {self.name}: a calibration needs both trainable and loss")

    @property
    def calibrated(self) -> bool:
        """Whether it calibrates on the target data and trains a policy (calibrate@, train_policy@)."""
        return self.trainable is not None

    @property
    def title(self) -> str:
        return self.label or self.name

    @property
    def starts_from(self) -> str:
        return self.training or WORLD_MODELS[self.world_model]

    @property
    def policy_path(self) -> str:
        return self.policy or f"models/policy/{self.name}/agent.pt"


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def observe_target(agent, batch: dict[str, torch.Tensor]) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The agent's world model filtering target ``batch``: (observe's outputs, the detached posterior
    log-probabilities, the mask of the steps that have a previous one)."""
    wm = agent.wm
    obs = {k: batch[k] for k in wm.obs_spec}
    mask = (~batch["is_first"].bool()).float()
    out = wm.observe(obs, batch["action"], batch["is_first"], generator=agent.generator)
    return out, out["post_logp"].detach(), mask

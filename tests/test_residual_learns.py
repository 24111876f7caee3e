"""What the latent residual is for (docs/method.md#the-latent-residual): a target whose actions act
backwards, as in pendulum-swingup-reversed and reacher-easy-reversed.

Synthetic latent data: each of S categorical variables moves one class up or down per step, the
direction the sign of the action dimension that drives it. In the source a positive action moves
it up; in the target, down. The world model reads the latent straight from the observation (its
encoder and posterior are the identity, so calibration sees the exact latent), and its prior is
fit to the source with the project's own Calibrator (``draw_finetune``'s part: the prior MLP and
initial logits). Then ReDRAW calibrates a residual on target data, and the corrected prior must
put the target's true next latent above the source model's prediction. A residual that sees only
the previous latent cannot: its correction is the same whichever way the action points, while
the class it must lift above the source's prediction swaps with the action's sign, so it can fix
at most about half of the steps (in practice it fixes almost none).
"""

import copy

import pytest
import torch
from torch import nn

from redraw.agent.actor_critic import ActorCriticConfig
from redraw.agent.adapt import CalibrateConfig, Calibrator
from redraw.agent.agent import Agent, AgentConfig
from redraw.models.residual import LatentResidual, ResidualConfig
from test_models import tiny

S, K, A = 6, 4, 2  #: latent variables, classes per variable, action dimensions
DRIVER = torch.arange(S) % A  #: the action dimension that moves each variable
SHARP = 8.0  #: the observation is the latent's one-hot as logits of +-SHARP
B, T = 16, 16  #: chunks per batch and their length


def chunks(direction: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A batch of chunks whose latent moves ``direction`` x sign(driving action) classes a step;
    returns the batch and the latent's classes [B, T, S]."""
    g = torch.Generator().manual_seed(seed)
    action = torch.rand(B, T, A, generator=g) * 2 - 1
    action[:, 0] = 0.0  # an episode's first action is a placeholder
    step = torch.where(action[..., DRIVER] > 0, 1, -1)
    z = torch.empty(B, T, S, dtype=torch.long)
    z[:, 0] = torch.randint(0, K, (B, S), generator=g)
    for t in range(1, T):  # action[:, t] is the action taken before observation t
        z[:, t] = (z[:, t - 1] + direction * step[:, t]) % K
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    batch = {"state": (nn.functional.one_hot(z, K).float() * 2 - 1).flatten(-2) * SHARP, "action": action,
             "is_first": is_first, "reward": torch.zeros(B, T), "is_terminal": torch.zeros(B, T, dtype=torch.bool)}
    return batch, z


class ActionBlindResidual(LatentResidual):
    """The residual with its action input held at zero: it sees the previous latent only."""

    def members(self, z, action):
        return super().members(z, torch.zeros_like(action))

    def member(self, m, z, action):
        return super().member(m, z, torch.zeros_like(action))


def prior(agent: Agent, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The agent's prior over each next latent while it filters ``batch``: log-probs [B, T-1, S, K]."""
    with torch.no_grad():
        out = agent.wm.observe({"state": batch["state"]}, batch["action"], batch["is_first"],
                               generator=torch.Generator().manual_seed(0))
    return out["prior_logp"][:, 1:]


@pytest.fixture(scope="module")
def source_model() -> Agent:
    """A DRAW model that reads the latent exactly and whose prior has learnt the source's dynamics."""
    torch.manual_seed(0)
    agent = Agent({"state": ((S * K,), "float32")}, A,
                  AgentConfig(wm=tiny(latent_vars=S, latent_classes=K, free_bits=0.0),
                              ac=ActorCriticConfig(units=16, horizon=4), bf16=False))
    agent.seed(0)
    agent.wm.encode = lambda obs: obs["state"]
    agent.wm.posterior = nn.Identity()
    fit = Calibrator(agent, "draw_finetune", CalibrateConfig(finetune_lr=1e-2), None)
    for i in range(300):
        fit.step(chunks(+1, seed=i)[0])
    agent.requires_grad_(False)
    return agent


@pytest.mark.parametrize("sees_action", [True, False], ids=["residual sees the action", "action hidden"])
def test_the_calibrated_prior_ranks_the_targets_next_latent_above_the_sources(source_model, sees_action):
    agent = copy.deepcopy(source_model)
    held_out, z = chunks(-1, seed=10_000)
    truth = z[:, 1:, :, None]
    source = prior(agent, held_out)
    # the source model has learnt its dynamics, so on the target it predicts the other class
    source_says = source.argmax(-1, keepdim=True)
    in_source, z_source = chunks(+1, seed=10_001)
    assert (prior(agent, in_source).argmax(-1) == z_source[:, 1:]).float().mean() > 0.9
    assert (source_says != truth).float().mean() > 0.85

    calibrate = Calibrator(agent, "redraw", CalibrateConfig(), ResidualConfig(hidden=64))
    if not sees_action:  # the same initial weights, the action input held at zero
        blind = ActionBlindResidual(S, K, A, agent.wm.residual.cfg)
        blind.load_state_dict(agent.wm.residual.state_dict())
        agent.wm.residual = blind
        calibrate = Calibrator(agent, "redraw", CalibrateConfig(), None, resume=True)
    for i in range(200):
        calibrate.step(chunks(-1, seed=20_000 + i)[0])

    corrected = prior(agent, held_out)
    ranked = (corrected.gather(-1, truth) > corrected.gather(-1, source_says))[source_says != truth]
    share = ranked.float().mean().item()
    assert (share > 0.9) == sees_action, (
        f"the calibrated prior ranks the true next latent above the source's prediction in {share:.0%} "
        f"of the held-out steps with the residual {'seeing' if sees_action else 'blind to'} the action")

"""``redraw``: a new latent residual on the frozen DRAW model, the only part trained on the target
data (Adam at ``calibrate.residual.lr``), fitted by KL(sg(posterior) || corrected prior) with no free
bits, an ensemble's members' losses summed (with ``bootstrap``, each member weighing each episode by
its own Poisson(1) count); the policy stage starts from a fresh actor-critic."""

from __future__ import annotations

from typing import TYPE_CHECKING

from redraw.methods.base import Method, Trainable, masked_mean, observe_target

if TYPE_CHECKING:
    import torch


def trainable(agent, cfg, residual, *, method: str = "redraw", resume: bool = False, episodes: int = 0,
              seed: int = 0) -> Trainable:
    """``resume``: the agent's residual as it is (the policy stage's concurrent schedule), not a new one."""
    import numpy as np
    import torch

    wm = agent.wm
    if not resume:
        agent.attach_residual(residual)
    elif wm.residual is None:
        raise ValueError(f"method {method}: the agent has no residual to train on")
    residual = wm.residual.cfg
    boot = None
    if residual.bootstrap and residual.members > 1:
        if episodes < 1:
            raise ValueError("a bootstrapped residual ensemble needs the number of target episodes")
        draws = np.random.default_rng([seed, 0xB00]).poisson(1.0, (residual.members, episodes))
        boot = torch.as_tensor(draws, dtype=torch.float32, device=agent.device)
    return Trainable(list(wm.residual.parameters()), residual.lr, residual.eps, residual.grad_clip, boot)


def loss(agent, batch: dict[str, torch.Tensor], boot: torch.Tensor | None = None
         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KL(sg(post) || softmax(prior raw logits + member)), no free bits, members summed; with
    ``boot`` member m weighs each chunk by its bootstrap count of the chunk's episode."""
    from redraw.models.dists import categorical_kl, class_log_softmax

    out, post, mask = observe_target(agent, batch)
    base = out["prior_base"].detach()
    kls = [categorical_kl(post, class_log_softmax(base + m)) for m in out["residual_members"]]
    if boot is None:
        loss = sum(masked_mean(kl, mask) for kl in kls)
    else:
        w = boot[:, batch["episode"]]  # [M, B]
        loss = sum(masked_mean(kl, mask * w[m][:, None]) for m, kl in enumerate(kls))
    return loss, {"calib/kl": masked_mean(categorical_kl(post, out["prior_logp"]), mask).detach()}


REDRAW = Method("redraw", role="redraw", trainable=trainable, loss=loss, residual=True, reinit_actor_critic=True)

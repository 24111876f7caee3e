"""The agent: a DRAW world model and an actor-critic trained in its imagination."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from redraw.agent.actor_critic import ActorCritic, ActorCriticConfig
from redraw.models.draw import DRAW, LatentState, WorldModelConfig
from redraw.models.dists import latent_logprobs, sample_onehot


@dataclass
class AgentConfig:
    wm: WorldModelConfig = field(default_factory=WorldModelConfig)
    ac: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    bf16: bool = True  #: bfloat16 autocast for the forward passes (AMX on CPU)
    imag_starts: int = 0  #: imagination start states per update (0: every posterior state)


class Agent(nn.Module):
    def __init__(self, obs_spec: dict, action_size: int, cfg: AgentConfig, device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg, self.obs_spec, self.action_size = cfg, dict(obs_spec), action_size
        self.device = torch.device(device)
        self.wm = DRAW(obs_spec, action_size, cfg.wm)
        self.ac = ActorCritic(cfg.wm.latent_dim, action_size, cfg.ac)
        self.to(self.device)
        self.wm_opt = torch.optim.Adam(self.wm.parameters(), cfg.wm.lr, eps=cfg.wm.eps)
        self.generator = torch.Generator(device=self.device)
        self.updates = 0

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with self._autocast():
            loss, metrics, out = self.wm.loss(batch, generator=self.generator)
        self.wm_opt.zero_grad(set_to_none=True)
        loss.backward()
        metrics["grad/wm"] = nn.utils.clip_grad_norm_(self.wm.parameters(), self.cfg.wm.grad_clip)
        self.wm_opt.step()
        metrics["loss/wm"] = loss.detach()

        # imagination from the posterior states (and the prior beliefs beside them)
        z = out["post_z"].detach().flatten(0, 1)
        belief = out["belief"].detach().flatten(0, 1)
        if self.cfg.imag_starts and self.cfg.imag_starts < len(z):
            idx = torch.randperm(len(z), generator=self.generator, device=self.device)[: self.cfg.imag_starts]
            z, belief = z[idx], belief[idx]
        with self._autocast():
            traj = self.wm.imagine(lambda s: self.ac.actor.act(s, generator=self.generator), LatentState(belief, z), self.cfg.ac.horizon,
                                   generator=self.generator)
            metrics.update(self.ac.update(traj))
        self.updates += 1
        return {k: float(v) for k, v in metrics.items()}

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], sample: bool = True) -> np.ndarray:
        """One action for one observation: posterior sample from this observation, then the actor."""
        x = {k: torch.as_tensor(np.asarray(obs[k]), device=self.device)[None] for k in self.obs_spec}
        with self._autocast():
            logits = self.wm.posterior_logits(self.wm.encode(x))
            z = sample_onehot(latent_logprobs(logits, self.cfg.wm.unimix), self.generator).flatten(-2)
            action = self.ac.actor.act(z, sample=sample, generator=self.generator)
        return action[0].float().cpu().numpy()

    def checkpoint_state(self) -> dict:
        return {
            "model": self.state_dict(),
            "wm_opt": self.wm_opt.state_dict(),
            "actor_opt": self.ac.actor_opt.state_dict(),
            "critic_opt": self.ac.critic_opt.state_dict(),
            "retnorm": self.ac.retnorm.state_dict(),
            "generator": self.generator.get_state(),
            "updates": self.updates,
        }

    def load_checkpoint_state(self, state: dict) -> None:
        self.load_state_dict(state["model"])
        self.wm_opt.load_state_dict(state["wm_opt"])
        self.ac.actor_opt.load_state_dict(state["actor_opt"])
        self.ac.critic_opt.load_state_dict(state["critic_opt"])
        self.ac.retnorm.load_state_dict(state["retnorm"])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])

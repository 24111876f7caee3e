"""Behaviour cloning without a world model: a policy fit to the target data's own actions.

The reference any policy learnt from the target data must beat: the data are an expert's
(the paper's target data), so copying its actions is a policy too. The cloned policy is the
agent's actor (``Actor``: the same layers, a Normal with a tanh mean and a bounded std) on the
standardised proprio observation instead of the world model's latent features, fit by the
negative log-likelihood of each recorded action given the observation it was taken from (the
action recorded at t + 1 was taken at the observation of t; an episode's first action is a
placeholder). It acts like the agent (``reset(rng)`` / ``act(obs)``): a sample per step from
the episode's own generator, clipped to [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from redraw.agent.actor_critic import Actor, ActorCriticConfig
from redraw.agent.policy import episode_generator


@dataclass
class CloningConfig:
    steps: int = 20000  #: gradient steps
    batch_size: int = 256
    lr: float = 3e-4
    eval_every: int = 1000  #: steps between NLL records (train batch and held-out episodes)
    #: clone only this share of the episodes, those of the highest returns ("filtered" cloning, e.g.
    #: 0.5; 1: all of them): where the data mix an expert with weaker behaviour
    top_fraction: float = 1.0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0 or self.eval_every < 1:
            raise ValueError(f"cloning needs steps, batch size, lr and eval_every above 0, got {self.steps}, "
                             f"{self.batch_size}, {self.lr}, {self.eval_every}")
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"cloning's top fraction must be in (0, 1], got {self.top_fraction}")

    @property
    def name(self) -> str:
        """``bc`` (every episode), or ``bc_topP`` (the best P% of them)."""
        return "bc" if self.top_fraction == 1 else f"bc_top{round(100 * self.top_fraction)}"


def select(episodes: list[dict], fraction: float) -> list[dict]:
    """The ``fraction`` of ``episodes`` with the highest returns (at least one; ties keep their
    order), in their original order."""
    n = max(1, math.ceil(fraction * len(episodes) - 1e-9))
    returns = [float(np.sum(ep["reward"][1:])) for ep in episodes]
    keep = set(sorted(range(len(episodes)), key=lambda i: -returns[i])[:n])
    return [ep for i, ep in enumerate(episodes) if i in keep]


def observation_keys(episode: dict) -> list[str]:
    """The vector observations of an episode (an image cannot be cloned from by an MLP)."""
    skip = {"action", "reward", "is_first", "is_last", "is_terminal", "image"}
    keys = sorted(k for k, v in episode.items() if k not in skip and np.asarray(v).ndim == 2)
    if not keys:
        raise ValueError(f"no vector observation to clone from (keys: {', '.join(sorted(episode))})")
    return keys


def pairs(episodes: list[dict], keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(observation at t, action recorded at t + 1) for every step of every episode."""
    obs = [np.concatenate([ep[k][:-1] for k in keys], -1) for ep in episodes]
    act = [ep["action"][1:] for ep in episodes]
    return np.concatenate(obs).astype(np.float32), np.concatenate(act).astype(np.float32)


class ClonedPolicy:
    """The fitted actor as a behaviour: ``reset(rng)`` per episode, ``act(obs)`` per step."""

    def __init__(self, actor: Actor, keys: list[str], mean: np.ndarray, std: np.ndarray):
        self.actor, self.keys = actor.eval(), keys
        self.mean, self.std = torch.as_tensor(mean), torch.as_tensor(std)
        self.generator: torch.Generator | None = None

    def features(self, obs: dict) -> torch.Tensor:
        x = torch.as_tensor(np.concatenate([np.asarray(obs[k], np.float32).reshape(-1) for k in self.keys]))
        return (x - self.mean) / self.std

    def reset(self, rng=None) -> None:
        self.generator = None if rng is None else episode_generator(rng)

    @torch.no_grad()
    def act(self, obs: dict) -> np.ndarray:
        return self.actor.act(self.features(obs)[None], sample=True, generator=self.generator)[0].numpy()


def nll(actor: Actor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per action (summed over the action's dimensions)."""
    return -actor.dist(x).log_prob(y).sum(-1).mean()


def fit(train: list[dict], held_out: list[dict], action_size: int, ac: ActorCriticConfig, cfg: CloningConfig,
        seed: int, progress: bool = True) -> tuple[ClonedPolicy, list[dict]]:
    """Fit the cloned policy on ``train``; returns it and its NLL curve (the training batch's and
    the ``held_out`` episodes', recorded every ``cfg.eval_every`` steps: reported, never used to
    choose anything)."""
    from tqdm import tqdm

    train = select(train, cfg.top_fraction)
    keys = observation_keys(train[0])
    obs, act = pairs(train, keys)
    mean, std = obs.mean(0), np.maximum(obs.std(0), 1e-2)
    x, y = torch.as_tensor((obs - mean) / std), torch.as_tensor(act)
    hx = hy = None
    if held_out:
        h_obs, h_act = pairs(held_out, keys)
        hx, hy = torch.as_tensor((h_obs - mean) / std), torch.as_tensor(h_act)
    torch.manual_seed(seed)
    actor = Actor(x.shape[1], action_size, ac)
    opt = torch.optim.Adam(actor.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(seed)
    curve = []
    for step in tqdm(range(1, cfg.steps + 1), desc="clone", unit="step", disable=None if progress else True):
        idx = torch.as_tensor(rng.integers(0, len(x), cfg.batch_size))
        loss = nll(actor, x[idx], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            point = {"step": step, "train_nll": float(loss.detach())}
            if hx is not None:
                with torch.no_grad():
                    point["heldout_nll"] = float(nll(actor, hx, hy))
            curve.append(point)
    return ClonedPolicy(actor, keys, mean, std), curve

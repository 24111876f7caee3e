"""Behaviour policies for data collection: noise processes, or a trained agent (``policy``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BEHAVIOURS = ("random", "correlated", "policy")

#: The target-data regimes an engineer has, by name: the ``collect_target.behaviour`` keys each
#: sets, every regime the same keys (``redraw regime NAME`` writes them into params.yaml). Each checkpoint is a dependency of
#: the collect_target stage in dvc.yaml, so the data are collected again when it changes.
TARGET_REGIMES = {
    "expert": ("the oracle's sampled actions as expert data (the paper; the bench, cpu, paper and quick presets)",
               {"kind": "policy", "checkpoint": "models/oracle/agent.pt", "noise_fraction": 0.0,
                "rho": 0.9, "scale": 1.0}),
    "source_policy": ("the source policy deployed on the target as it is: what a real robot yields first",
                      {"kind": "policy", "checkpoint": "models/pretrain/agent.pt", "noise_fraction": 0.0,
                       "rho": 0.9, "scale": 1.0}),
    "expert_noisy": ("the expert, half of its episodes replaced by correlated noise "
                     "(redraw experiment transfer_quality --noise-fraction 0.5)",
                     {"kind": "policy", "checkpoint": "models/oracle/agent.pt", "noise_fraction": 0.5,
                      "rho": 0.9, "scale": 1.0}),
    "correlated": ("correlated AR(1) noise only, no policy (the smoke preset)",
                   {"kind": "correlated", "checkpoint": "", "noise_fraction": 0.0, "rho": 0.9, "scale": 1.0}),
}


@dataclass
class BehaviourConfig:
    """How the collector picks actions."""

    kind: str = "random"  #: random (uniform in bounds) | correlated (AR(1) noise) | policy
    rho: float = 0.9  #: correlated: AR(1) coefficient; 0 is white noise, ->1 is smoother
    scale: float = 1.0  #: correlated: stationary std of the noise before clipping
    checkpoint: str = ""  #: policy: path of a trained policy checkpoint
    #: policy: share of episodes that take correlated noise (rho, scale) instead of the policy,
    #: drawn per episode. An expert alone shows only its own actions, and a model calibrated on
    #: that is wrong wherever a learning policy goes next (0: expert only, the paper's data)
    noise_fraction: float = 0.0


class UniformRandom:
    def __init__(self, low: np.ndarray, high: np.ndarray):
        self.low, self.high = low, high

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def act(self, obs: dict) -> np.ndarray:
        return self.rng.uniform(self.low, self.high).astype(np.float32)


class CorrelatedNoise:
    """x_t = rho x_{t-1} + sqrt(1 - rho^2) * scale * eps_t, clipped to the bounds."""

    def __init__(self, low: np.ndarray, high: np.ndarray, rho: float, scale: float):
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"behaviour.rho must be in [0, 1), got {rho}")
        self.low, self.high, self.rho, self.scale = low, high, rho, scale

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.x = rng.normal(0.0, self.scale, size=self.low.shape)

    def act(self, obs: dict) -> np.ndarray:
        eps = self.rng.normal(0.0, self.scale, size=self.low.shape)
        self.x = self.rho * self.x + np.sqrt(1.0 - self.rho**2) * eps
        return np.clip(self.x, self.low, self.high).astype(np.float32)


class Mixture:
    """Each episode, with probability ``fraction``, ``noise`` acts instead of ``policy``."""

    def __init__(self, policy, noise, fraction: float):
        self.policy, self.noise, self.fraction, self.current = policy, noise, fraction, policy

    def reset(self, rng: np.random.Generator) -> None:
        self.current = self.noise if rng.random() < self.fraction else self.policy
        self.current.reset(rng)

    def act(self, obs: dict) -> np.ndarray:
        return self.current.act(obs)


def make_behaviour(cfg: BehaviourConfig, low: np.ndarray, high: np.ndarray, env=None):
    """The behaviour ``cfg`` names. ``policy`` loads a trained agent and needs ``env`` (for its
    observation spec); the checkpoint must match it."""
    if not 0.0 <= cfg.noise_fraction <= 1.0:
        raise ValueError(f"behaviour.noise_fraction must be in [0, 1], got {cfg.noise_fraction}")
    if cfg.noise_fraction and cfg.kind != "policy":
        raise ValueError(f"behaviour.noise_fraction mixes noise into a policy's episodes; kind is {cfg.kind!r}, "
                         "not 'policy' (set noise_fraction: 0)")
    if cfg.kind == "random":
        return UniformRandom(low, high)
    if cfg.kind == "correlated":
        return CorrelatedNoise(low, high, cfg.rho, cfg.scale)
    if cfg.kind == "policy":
        if not cfg.checkpoint:
            raise ValueError("behaviour 'policy' needs behaviour.checkpoint, e.g. models/oracle/agent.pt")
        if env is None:
            return None  # validated when the env exists (see collect)
        from redraw.agent.agent import AgentPolicy, load_agent

        expect = {"obs_spec": {k: list(shape) for k, (shape, _) in env.observation_spec().items()},
                  "action_size": env.action_size}
        policy = AgentPolicy(load_agent(cfg.checkpoint, expect=expect), sample=True)
        if cfg.noise_fraction:
            return Mixture(policy, CorrelatedNoise(low, high, cfg.rho, cfg.scale), cfg.noise_fraction)
        return policy
    raise ValueError(f"unknown behaviour kind {cfg.kind!r}; choose one of {BEHAVIOURS}")


def describe(cfg: BehaviourConfig) -> str:
    if cfg.kind == "correlated":
        return f"correlated(rho={cfg.rho}, scale={cfg.scale})"
    if cfg.kind == "policy":
        mix = f" + {cfg.noise_fraction:.0%} correlated(rho={cfg.rho}, scale={cfg.scale})" if cfg.noise_fraction else ""
        return f"policy:{cfg.checkpoint}{mix}"
    return cfg.kind

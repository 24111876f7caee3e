"""Action and observation latency in agent steps: the two timing perturbations, for every simulator."""

from __future__ import annotations

from collections import deque

import numpy as np


class Delays:
    """FIFO queues between the agent and the simulator.

    ``action_steps`` = k: the action given at agent step t is applied at step t + k; the first k
    steps of an episode apply ``neutral`` (the middle of the action bounds). ``obs_steps`` = k:
    the observation returned after step t is the one after step t - k; the first k steps
    return the episode's first observation again. Rewards and episode ends are not delayed.
    """

    def __init__(self, action_steps: int, obs_steps: int, neutral: np.ndarray):
        self.action_steps, self.obs_steps, self.neutral = action_steps, obs_steps, neutral
        self._actions: deque = deque()
        self._obs: deque = deque()

    def reset(self, obs: dict) -> dict:
        self._actions = deque([self.neutral.copy() for _ in range(self.action_steps)])
        self._obs = deque([obs] * self.obs_steps)
        return obs

    def action(self, action: np.ndarray) -> np.ndarray:
        if not self.action_steps:
            return action
        self._actions.append(action)
        return self._actions.popleft()

    def observation(self, obs: dict) -> dict:
        if not self.obs_steps:
            return obs
        self._obs.append(obs)
        return self._obs.popleft()

"""Replay of whole episodes with uniform sampling of fixed-length chunks."""

from __future__ import annotations

import numpy as np
import torch

from redraw.data.episodes import Episode


def batch_keys(obs_spec) -> list[str]:
    """The episode keys a training batch carries: the observations of ``obs_spec``, then the
    action, reward and the two episode flags the world model reads."""
    return [*obs_spec, "action", "reward", "is_first", "is_terminal"]


class Replay:
    """Episodes in memory; ``sample`` draws ``batch`` chunks of ``length`` rows uniformly.

    A chunk's first row is marked ``is_first`` (the model's state restarts there: DRAW has no
    recurrent state to carry, only the prior's belief chain).
    """

    def __init__(self, keys: list[str], length: int, seed: int = 0):
        self.keys, self.length = list(keys), length
        self.episodes: list[Episode] = []
        self.rng = np.random.default_rng(seed)
        self._starts: list[int] = []  # valid chunk starts per episode

    def add(self, episode: Episode) -> None:
        n = len(episode["reward"])
        if n < self.length:
            return
        self.episodes.append({k: episode[k] for k in self.keys})
        self._starts.append(n - self.length + 1)

    @property
    def transitions(self) -> int:
        return sum(len(e["reward"]) - 1 for e in self.episodes)

    def __len__(self) -> int:
        return len(self.episodes)

    def sample(self, batch: int, with_episode: bool = False) -> dict[str, torch.Tensor]:
        """``batch`` chunks of ``length`` rows; ``with_episode`` adds ``episode`` [batch], the index
        (into ``episodes``) each chunk comes from. The random draws are the same either way."""
        if not self.episodes:
            raise RuntimeError(f"replay holds no episode of at least {self.length} rows")
        weights = np.asarray(self._starts, np.float64)
        eps = self.rng.choice(len(self.episodes), size=batch, p=weights / weights.sum())
        out = {k: [] for k in self.keys}
        for e in eps:
            start = int(self.rng.integers(self._starts[e]))
            for k in self.keys:
                out[k].append(self.episodes[e][k][start : start + self.length])
        arrays = {k: np.stack(v) for k, v in out.items()}
        arrays["is_first"] = arrays["is_first"].copy()
        arrays["is_first"][:, 0] = True
        if with_episode:
            arrays["episode"] = np.asarray(eps, np.int64)
        return {k: torch.from_numpy(v) for k, v in arrays.items()}

    def rng_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

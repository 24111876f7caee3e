"""Returns and normalisation as pure functions (tested against naive loops)."""

from __future__ import annotations

import torch


def lambda_returns(reward: torch.Tensor, cont: torch.Tensor, value: torch.Tensor, discount: float, lam: float) -> torch.Tensor:
    """TD(lambda) returns of an imagined trajectory.

    reward, cont: [H, ...] predicted on arriving at step t+1; value: [H+1, ...] at steps 0..H.
    R_t = r_t + discount * c_t * ((1 - lam) * v_{t+1} + lam * R_{t+1}), R_H = v_H. Returns [H, ...].
    """
    H = reward.shape[0]
    if value.shape[0] != H + 1:
        raise ValueError(f"value needs H+1={H + 1} steps, got shape {tuple(value.shape)}")
    out = []
    last = value[-1]
    for t in reversed(range(H)):
        last = reward[t] + discount * cont[t] * ((1 - lam) * value[t + 1] + lam * last)
        out.append(last)
    return torch.stack(out[::-1])


class PercentileNormalizer:
    """Return scale from EMAs of the 5th and 95th percentiles: max(floor, P95 - P5) (DreamerV3;
    floor 1 for task returns, 0.01 for Plan2Explore's small disagreement rewards)."""

    def __init__(self, decay: float = 0.99, low: float = 0.05, high: float = 0.95, floor: float = 1.0):
        if floor <= 0:
            raise ValueError(f"the return-normalisation floor must be positive, got {floor}")
        self.decay, self.low, self.high, self.floor = decay, low, high, floor
        self.lo = None
        self.hi = None

    def update(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float().flatten()
        lo, hi = torch.quantile(x, self.low), torch.quantile(x, self.high)
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            self.lo = self.decay * self.lo + (1 - self.decay) * lo
            self.hi = self.decay * self.hi + (1 - self.decay) * hi
        return self.scale()

    def scale(self) -> torch.Tensor:
        if self.lo is None:
            return torch.tensor(1.0)
        return torch.clamp(self.hi - self.lo, min=self.floor)

    def state_dict(self) -> dict:
        return {"lo": self.lo, "hi": self.hi}

    def load_state_dict(self, state: dict) -> None:
        self.lo, self.hi = state["lo"], state["hi"]

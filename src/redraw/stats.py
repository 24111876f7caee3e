"""Summary statistics shared by the evaluation stage, deployment checks and sweeps (no torch)."""

from __future__ import annotations

import math

import numpy as np


def summarise(returns: list[float]) -> dict[str, float]:
    """Mean, std and a 95% Student-t confidence interval of the mean."""
    from scipy import stats

    r = np.asarray(returns, np.float64)
    mean, std = float(r.mean()), float(r.std(ddof=1)) if len(r) > 1 else 0.0
    half = float(stats.t.ppf(0.975, len(r) - 1) * std / math.sqrt(len(r))) if len(r) > 1 else 0.0
    return {"return_mean": mean, "return_std": std, "return_ci_low": mean - half, "return_ci_high": mean + half,
            "episodes": len(r)}


def paired(before: list[float], after: list[float], names: tuple[str, str] = ("before", "after")) -> dict:
    """``summarise`` of two runs' returns on the same episodes (the first as many as both ran) and of
    their per-episode difference (after - before), keyed by ``names`` and ``difference``."""
    n = min(len(before), len(after))
    return {names[0]: summarise(before[:n]), names[1]: summarise(after[:n]),
            "difference": summarise([b - a for a, b in zip(before[:n], after[:n])])}

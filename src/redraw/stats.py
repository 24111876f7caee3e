"""Summary statistics shared by the evaluation stage, deployment checks and sweeps (no torch)."""

from __future__ import annotations

import math

import numpy as np


def summarise(returns: list[float]) -> dict[str, float]:
    """Mean, std and a 95% Student-t confidence interval of the mean."""
    # the t quantile as scipy.stats.t.ppf computes it (stdtrit), without importing scipy.stats
    # (0.85 s of every evaluation process's start)
    from scipy.special import stdtrit

    r = np.asarray(returns, np.float64)
    mean, std = float(r.mean()), float(r.std(ddof=1)) if len(r) > 1 else 0.0
    half = float(stdtrit(len(r) - 1, 0.975) * std / math.sqrt(len(r))) if len(r) > 1 else 0.0
    return {"return_mean": mean, "return_std": std, "return_ci_low": mean - half, "return_ci_high": mean + half,
            "episodes": len(r)}


#: what a results record keeps of a ``summarise``
RECORDED = ("return_mean", "return_ci_low", "return_ci_high", "episodes")


def paired(before: list[float], after: list[float], names: tuple[str, str] = ("before", "after"),
           fields: tuple[str, ...] | None = None) -> dict:
    """``summarise`` of two runs' returns on the same episodes (the first as many as both ran) and of
    their per-episode difference (after - before), keyed by ``names`` and ``difference``; only
    ``fields`` of each summary if given (``RECORDED``: what a results record keeps)."""
    n = min(len(before), len(after))
    out = {names[0]: summarise(before[:n]), names[1]: summarise(after[:n]),
           "difference": summarise([b - a for a, b in zip(before[:n], after[:n])])}
    return out if fields is None else {k: {f: v[f] for f in fields} for k, v in out.items()}


def interval(summary: dict, signed: bool = False) -> str:
    """``mean [low, high]`` of a summary, one decimal (``signed``: with the mean's sign)."""
    mean = f"{summary['return_mean']:+.1f}" if signed else f"{summary['return_mean']:.1f}"
    return f"{mean} [{summary['return_ci_low']:.1f}, {summary['return_ci_high']:.1f}]"

"""Summary statistics shared by the evaluation stage, deployment checks, sweeps and the results
report (no torch)."""

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


def runs_needed(values: list[float], line: float = 0.0, margin: float | None = None) -> int | None:
    """How many values the 95% Student-t interval of their mean needs, at the same mean and
    standard deviation, to exclude ``line`` or (with ``margin``) to lie within ``line`` ± margin,
    whichever comes first; None with fewer than two values, or where neither ever happens (a mean
    on the line and no margin). The values' own count where it already decides."""
    from scipy.special import stdtrit

    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return None
    off, sd = abs(float(v.mean()) - line), float(v.std(ddof=1))
    target = max(off, margin - off) if margin is not None else off
    if target <= 0:
        return None
    n = max(len(v), int((1.959964 * sd / target) ** 2))  # t's quantile is above the normal's: no fewer
    while float(stdtrit(n - 1, 0.975)) * sd / math.sqrt(n) >= target:
        n += 1
    return n


# Across tasks and runs (rliable, Agarwal et al. 2021, "Deep RL at the edge of the statistical
# precipice"): a score matrix is runs x tasks; intervals are rliable's stratified bootstrap (runs
# resampled within each task), percentile method. rliable's bootstrap draws from numpy's global
# generator, which these seed and restore, so the same scores give the same intervals.
REPS = 2000  #: bootstrap replications


def iqm(scores: np.ndarray) -> float:
    """The interquartile mean of all runs and tasks: ``rliable.metrics.aggregate_iqm`` (scipy's
    25% ``trim_mean`` of the flattened matrix) without scipy's per-call overhead, for the bootstrap."""
    x = np.sort(np.asarray(scores, np.float64).ravel())
    cut = int(0.25 * len(x))
    return float(x[cut:len(x) - cut].mean())


def improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) averaged over tasks (ties count half): ``rliable.metrics.probability_of_improvement``
    (the Mann-Whitney U statistic over runs x runs of each task, normalised) in one numpy step."""
    a, b = np.asarray(x, np.float64)[:, None, :], np.asarray(y, np.float64)[None, :, :]
    return float(np.mean((a > b).mean(axis=(0, 1)) + 0.5 * (a == b).mean(axis=(0, 1))))


class _Seeded:
    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self.state = np.random.get_state()
        np.random.seed(self.seed)

    def __exit__(self, *exc):
        np.random.set_state(self.state)


def iqm_intervals(scores: dict[str, np.ndarray], reps: int = REPS,
                  seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Per key: (IQM, low, high) of a runs x tasks score matrix, the IQM as
    ``rliable.metrics.aggregate_iqm`` gives it and its 95% stratified bootstrap interval
    (``rliable.library.get_interval_estimates``)."""
    from rliable import library, metrics

    with _Seeded(seed):
        _, cis = library.get_interval_estimates(scores, lambda s: np.array([iqm(s)]), reps=reps)
    return {k: (float(metrics.aggregate_iqm(v)), float(cis[k][0, 0]), float(cis[k][1, 0])) for k, v in scores.items()}


def improvement_intervals(pairs: dict[str, tuple[np.ndarray, np.ndarray]], reps: int = REPS,
                          seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Per key: (P(X > Y), low, high) for a pair (X, Y) of runs x tasks score matrices (the same
    tasks, each its own number of runs): ``rliable.metrics.probability_of_improvement`` and its
    95% interval from rliable's stratified bootstrap of each matrix on its own."""
    from rliable import library, metrics

    with _Seeded(seed):
        _, cis = library.get_interval_estimates({k: list(v) for k, v in pairs.items()},
                                                lambda x, y: np.array([improvement(x, y)]), reps=reps)
    return {k: (float(metrics.probability_of_improvement(*v)), float(cis[k][0, 0]), float(cis[k][1, 0]))
            for k, v in pairs.items()}


def performance_profiles(scores: dict[str, np.ndarray], taus: np.ndarray, reps: int = REPS,
                         seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per key: the score distribution (the share of all runs and tasks scoring above each tau)
    with its 95% stratified bootstrap band: ``rliable.library.create_performance_profile``."""
    from rliable import library

    taus = np.asarray(taus, np.float64)
    with _Seeded(seed):
        profiles, cis = library.create_performance_profile(
            scores, taus, custom_profile_func=lambda s, t: (np.ravel(s)[:, None] > t[None, :]).mean(axis=0), reps=reps)
    return {k: (np.asarray(profiles[k]), np.asarray(cis[k][0]), np.asarray(cis[k][1])) for k in scores}

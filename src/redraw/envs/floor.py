"""What an env pays a policy without skill: the returns of zero and of uniform random actions.

A pretraining counts as learnt when its last evaluation reaches its source's threshold (the
env-pair file's ``learned:``, else ``redraw.results_records.LEARNED``); this is the floor that threshold
has to stand clear of. Some envs pay for doing nothing in a few episodes (finger-turn_hard starts
the tip inside the target in about 4% of episodes, and a finger that leaves the spinner alone then
scores the whole episode), so a few fixed evaluation episodes can show a constant return from a
policy that has learnt nothing.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

#: the behaviours, each a function of (env, rng) -> action
BEHAVIOURS = {
    "zero actions": lambda env, rng: (env.action_low + env.action_high) / 2.0,
    "uniform random": lambda env, rng: rng.uniform(env.action_low, env.action_high),
}


def floor_returns(name: str, episodes: int, pairs=None, seed: int = 0) -> dict[str, list[float]]:
    """Each behaviour's return in each of ``episodes`` episodes of env ``name`` (the task's
    initial-state seeds 0..episodes-1, the same episodes for every behaviour)."""
    from redraw.envs import make_env

    out: dict[str, list[float]] = {}
    with make_env(name, "proprio", seed=seed, pairs=pairs) as env:
        for behaviour, act in BEHAVIOURS.items():
            rng = np.random.default_rng(seed)
            returns = []
            for episode in range(episodes):
                env.reset(seed=episode)
                total, done = 0.0, False
                while not done:
                    _, reward, terminal, truncated = env.step(np.asarray(act(env, rng), np.float32))
                    total += float(reward)
                    done = terminal or truncated
                returns.append(total)
            out[behaviour] = returns
    return out


def floor_table(names: list[str], pairs, episodes: int, learned: Callable[[str], float | None]) -> str:
    """A markdown table: per env and behaviour, the mean return over ``episodes`` episodes, its
    range, how many episodes paid anything, and the return a pretraining there must reach
    (``learned(source)``, e.g. ``redraw.results_records.learned_threshold``; None: no verdict)."""
    from tqdm import tqdm

    rows = ["| env | behaviour | mean return | min - max | episodes with a return > 0 | learnt at |",
            "|---|---|---:|---:|---:|---:|"]
    for name in tqdm(names, desc="floor", unit="env", leave=False):
        spec = pairs.get(name)
        threshold = learned(spec.source or name)
        for behaviour, returns in floor_returns(name, episodes, pairs).items():
            r = np.asarray(returns)
            rows.append(f"| {name} | {behaviour} | {r.mean():.1f} | {r.min():.1f} - {r.max():.1f} | "
                        f"{int((r > 0).sum())} of {len(r)} | {'-' if threshold is None else f'{threshold:.0f}'} |")
    return "\n".join(rows)

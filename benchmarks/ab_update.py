"""Two settings of the pretraining update against each other, update by update in one process.

This machine's speed drifts by a third or more within minutes, so two settings timed one after the
other (or in two processes) differ by as much as most changes do. Here two agents of the same case,
each built with its own ``params.yaml`` overrides (``--a``, ``--b``), take turns: every pair of
updates runs A then B or B then A (alternating), and what is reported is the per-pair difference
B - A: its mean with a 95% Student-t interval, and its median with a 95% interval from order
statistics (which one slow outlier hardly moves). Drift cancels in the pairs.

    python benchmarks/ab_update.py --b perf.compile=false                     # what compiling buys
    python benchmarks/ab_update.py --b perf.fused_chain=false --pairs 60
    python benchmarks/ab_update.py --a perf.threads=1 --b perf.threads=2      # threads per side
    python benchmarks/ab_update.py --case "quick preset" --b pretrain.bf16=false --json

Both agents start from the same seed and train on the same synthetic batch (``train_speed.build``);
each side runs with its own ``perf.threads`` (else ``--threads``), set before each of its updates.
The last line reads ``B - A: +X.X ms per update [low, high] (95% CI, N pairs); A/B N.NNx``
(A/B: the ratio of the medians, above 1 when B is faster); with ``--json``, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import CASES, build  # noqa: E402
from redraw.experiments.transfer_quality import parse_set  # noqa: E402


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median of ``values``: the order statistics k and n+1-k
    with k the largest such that P(Binomial(n, 1/2) < k) <= (1 - level) / 2 (one slow outlier,
    which moves the mean's interval, moves it by one rank at most)."""
    from math import comb

    v, n = sorted(values), len(values)
    k, below = 0, 0.0  # below: P(X < k + 1) as k grows
    while k < n // 2:
        below += comb(n, k) / 2**n
        if below > (1 - level) / 2:
            break
        k += 1
    if k == 0:  # too few values for the level: the whole range
        return v[0], v[-1]
    return v[k - 1], v[n - k]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/ab_update.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=list(CASES), default="cpu preset", help="sizes (default: cpu preset)")
    parser.add_argument("--a", dest="a", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml key of side A on top of the case's preset (repeatable; none: the preset)")
    parser.add_argument("--b", dest="b", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml key of side B (repeatable; none: the preset)")
    parser.add_argument("--pairs", type=int, default=40, help="timed pairs of updates (default: 40)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed updates per side first (compilation, allocator; default: 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of a side whose overrides do not set perf.threads (default: 1)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object last")
    args = parser.parse_args(argv)
    if args.pairs < 2:
        parser.error(f"--pairs must be at least 2 (an interval needs two differences), got {args.pairs}")
    if args.warmup < 0 or args.threads < 1:
        parser.error("--warmup must be 0 or more and --threads at least 1")
    try:
        overrides = {"A": parse_set(args.a, "--a"), "B": parse_set(args.b, "--b")}
    except ValueError as exc:
        parser.error(str(exc))

    import torch

    from redraw.config import ConfigError
    from redraw.stats import summarise

    default_threads = torch.get_num_threads()  # torch's own, what perf.threads=0 means
    sides = {}
    for name, sets in overrides.items():
        threads = args.threads if "perf.threads" not in sets else int(sets["perf.threads"]) or default_threads
        try:
            agent, _, batch, _ = build(args.case, threads=threads, overrides=sets, flag=f"--{name.lower()}")
        except ConfigError as exc:
            parser.error(str(exc))
        sides[name] = (agent, batch, threads)

    def update(name: str) -> float:
        agent, batch, threads = sides[name]
        torch.set_num_threads(threads)
        start = time.perf_counter()
        agent.train_step(batch)
        return (time.perf_counter() - start) * 1e3

    from tqdm.auto import tqdm

    # on a terminal only (disable=None), on stderr: the warm-up compiles, which can take a minute
    with tqdm(total=2 * (args.warmup + args.pairs), desc=f"ab_update {args.case}", unit="update",
              disable=None) as bar:
        for name in sides:
            for _ in range(args.warmup):
                update(name)
                bar.update()
        times: dict[str, list[float]] = {"A": [], "B": []}
        for i in range(args.pairs):
            for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
                times[name].append(update(name))
                bar.update()
    diffs = [b - a for a, b in zip(times["A"], times["B"])]
    diff = summarise(diffs)
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "case": args.case, "pairs": args.pairs, "a": overrides["A"], "b": overrides["B"],
        "threads": {k: v[2] for k, v in sides.items()},
        "a_median_ms": median["A"], "b_median_ms": median["B"],
        "difference_mean_ms": diff["return_mean"], "difference_ci_ms": [diff["return_ci_low"], diff["return_ci_high"]],
        "difference_median_ms": statistics.median(diffs), "difference_median_ci_ms": list(median_interval(diffs)),
        "a_over_b": median["A"] / median["B"],
    }
    for name in ("A", "B"):
        sets = overrides[name]
        what = ", ".join(f"{k}={v}" for k, v in sets.items()) or "the preset"
        print(f"{name}: {what} ({sides[name][2]} thread(s)): median {median[name]:.1f} ms per update "
              f"(range {min(times[name]):.1f}-{max(times[name]):.1f})")
    low, high = result["difference_median_ci_ms"]
    print(f"{args.case}, {args.pairs} pairs: median difference {result['difference_median_ms']:+.1f} ms "
          f"[{low:+.1f}, {high:+.1f}] (95%, order statistics)")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"B - A: {diff['return_mean']:+.1f} ms per update [{diff['return_ci_low']:+.1f}, "
              f"{diff['return_ci_high']:+.1f}] (95% CI, {args.pairs} pairs); A/B {result['a_over_b']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

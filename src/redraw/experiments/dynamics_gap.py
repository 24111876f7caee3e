"""Open-loop dynamics gap of world models on any episodes: where does a calibrated model hold?

``calibrate@METHOD`` reports the gap on held-out episodes of its own target data. A model is only
calibrated where those data go; this script measures any agent checkpoints (source, calibrated,
oracle) on any episode directory of the same env kind, e.g. target episodes from another
behaviour than the one calibrated on, with the quantities of the calibrate stage: the one-step
latent KL while filtering, and per open-loop horizon 1..H after ``--context`` observed steps the
latent KL and the decoded observations' squared error.

    redraw experiment dynamics_gap WORKDIR/data/target WORKDIR/models/pretrain/agent.pt \\
        WORKDIR/models/calibrate/redraw/agent.pt WORKDIR/models/oracle/agent.pt --episodes 10

Prints a markdown table, one row per model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def measure(episodes: list[dict], models, expect: dict, context: int, horizon: int, seed: int):
    """Yield ``(path, dynamics_gap(...))`` for each agent checkpoint in ``models`` on ``episodes``
    (chunks of ``context + horizon`` steps). A model that cannot act on data of ``expect`` (obs
    spec, action size) or episodes too short raise ValueError naming the cause."""
    from redraw.agent.adapt import dynamics_gap
    from redraw.agent.agent import load_agent
    from redraw.data.replay import batch_keys
    from redraw.data.target import TargetDataError
    from redraw.stages.calibrate import holdout_batch

    length = context + horizon
    for path in models:
        try:
            agent = load_agent(path, expect=expect)
        except ValueError as exc:  # a model of another env, obs mode or action size than the data
            raise ValueError(f"{path} cannot be measured on these episodes: {exc}") from None
        try:
            batch = holdout_batch(episodes, batch_keys(agent.obs_spec), length)
        except TargetDataError:
            raise ValueError(f"no episode has the context + horizon = {length} steps") from None
        yield path, dynamics_gap(agent, batch, context, seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="an episode directory (collected, imported or validated target data)")
    parser.add_argument("models", type=Path, nargs="+", help="agent checkpoints (agent.pt) to measure")
    parser.add_argument("--episodes", type=int, default=10, help="the newest N episodes of DATA (default 10)")
    parser.add_argument("--context", type=int, default=5, help="observed steps before open loop (default 5)")
    parser.add_argument("--horizon", type=int, default=32, help="open-loop steps (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from redraw.data.episodes import list_episodes, load_episode
    from redraw.data.schema import DataError, read_metadata

    if args.episodes < 1 or args.context < 1 or args.horizon < 1:
        parser.error("--episodes, --context and --horizon must be at least 1")
    for path in args.models:
        if not path.is_file():
            parser.error(f"{path}: no such checkpoint")
    try:
        meta = read_metadata(args.data)
    except (DataError, FileNotFoundError) as exc:
        parser.error(str(exc))
    files = list_episodes(args.data)[-args.episodes:]
    if not files:
        parser.error(f"{args.data}: no episodes")
    episodes = [load_episode(f) for f in files]
    expect = {"obs_spec": {k: list(v["shape"]) for k, v in meta.observations.items()}, "action_size": meta.action_size}
    H = args.horizon
    print(f"{args.data} ({meta.env}, behaviour {meta.behaviour}): the newest {len(episodes)} episodes, "
          f"{args.context} observed steps, then {H} open loop\n")
    print(f"| model | one-step KL (filtering) | KL at h=1 | mean KL h=1..{H} | mean decoded error h=1..{H} "
          f"| decoded error at h={H} |\n|---|---:|---:|---:|---:|---:|")
    try:
        for path, gap in measure(episodes, args.models, expect, args.context, H, args.seed):
            print(f"| {path} | {gap['kl_filter']:.3f} | {gap['kl'][0]:.3f} | {np.mean(gap['kl']):.2f} "
                  f"| {np.mean(gap['mse']):.3f} | {gap['mse'][-1]:.3f} |", flush=True)
    except ValueError as exc:
        parser.error(f"{args.data}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Collection throughput: redraw's collector vs a plain dm_control loop with stock rendering.

Both do the same work: the same task, the same number of agent steps (action repeat 2, one
64x64 camera-0 image per agent step, uniform random actions). The reference is a single-process
loop calling ``physics.render`` (dm_control's default scene: shadows and reflections on). redraw
also writes every episode to disk. Both are measured in this run and printed as a ratio.

    python benchmarks/collect_throughput.py [--env cup-catch] [--episodes 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np


def plain_dm_control(env_name: str, steps: int, episode_steps: int, seed: int = 0) -> float:
    from dm_control import suite

    from redraw.envs import get_spec

    spec = get_spec(env_name)
    env = suite.load(spec.domain, spec.task, task_kwargs={"random": seed})
    rng = np.random.default_rng(seed)
    aspec = env.action_spec()
    start, done_steps = time.perf_counter(), 0
    while done_steps < steps:
        env.reset()
        env.physics.render(64, 64, camera_id=0)
        for _ in range(min(episode_steps, steps - done_steps)):
            action = rng.uniform(aspec.minimum, aspec.maximum)
            for _ in range(2):
                env.step(action)
            env.physics.render(64, 64, camera_id=0)
            done_steps += 1
    return done_steps / (time.perf_counter() - start)


def redraw_collector(env_name: str, episodes: int, episode_steps: int, workers: int) -> float:
    from redraw.data.collect import CollectConfig, collect

    with tempfile.TemporaryDirectory() as tmp:
        cfg = CollectConfig(env=env_name, out_dir=f"{tmp}/data", obs_mode="pixels", episodes=episodes,
                            episode_steps=episode_steps, workers=workers)
        start = time.perf_counter()
        collect(cfg, progress=False)
        return episodes * episode_steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="cup-catch", help="registered env (default: cup-catch)")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per side (default: 4)")
    parser.add_argument("--episode-steps", type=int, default=500, help="agent steps per episode (default: 500)")
    parser.add_argument("--workers", type=int, default=2, help="redraw collector processes (default: 2)")
    args = parser.parse_args()
    steps = args.episodes * args.episode_steps
    ours = redraw_collector(args.env, args.episodes, args.episode_steps, args.workers)
    ref = plain_dm_control(args.env, steps, args.episode_steps)
    print(f"env {args.env}, pixels 64x64, {steps} agent steps each, {os.cpu_count()} CPUs")
    print(f"plain dm_control loop (stock render, 1 process): {ref:8.1f} agent steps/s")
    print(f"redraw collector ({args.workers} workers, incl. writing npz): {ours:8.1f} agent steps/s")
    print(f"speed-up: {ours / ref:.1f}x (goal >= 5x)")


if __name__ == "__main__":
    main()

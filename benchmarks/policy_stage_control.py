"""Control experiment for the policy stage: a target-trained world model, a fresh actor-critic.

Takes the oracle's world model (trained online on the target system, so its dynamics are right
by construction), re-initialises the actor-critic and trains it exactly as ``train_policy`` does
(imagination from the posterior states of episodes in ``--starts``, frozen reward head), then
evaluates it on the target. If this policy fails too, the policy stage is what fails, not the
latent residual. Runs in a quality-benchmark work directory (it needs ``models/oracle``):

    python benchmarks/policy_stage_control.py /tmp/redraw-quality/cpu-seed0 --updates 5000
    python benchmarks/policy_stage_control.py /tmp/redraw-quality/cpu-seed0 --starts data/source
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path, help="a quality-benchmark work directory (has models/oracle, params.yaml)")
    parser.add_argument("--updates", type=int, default=2000, help="actor-critic updates in imagination (default 2000)")
    parser.add_argument("--starts", default="data/target", help="episodes whose posterior states start imagination")
    parser.add_argument("--episodes", type=int, default=5, help="evaluation episodes on the target (default 5)")
    parser.add_argument("--keep-actor-critic", action="store_true",
                        help="start from the oracle's own actor-critic (with --updates 0: checks this script's "
                        "evaluation reproduces the oracle)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if not (args.workdir / "models/oracle/agent.pt").is_file():
        parser.error(f"{args.workdir / 'models/oracle/agent.pt'}: no oracle here; run the quality benchmark "
                     "(or `dvc repro oracle`) in this directory first")
    os.chdir(args.workdir)
    from redraw.agent.dreamer import load_agent
    from redraw.checkpoint import load_checkpoint, save_checkpoint
    from redraw.config import get, load_params, section
    from redraw.data.episodes import iter_episodes
    from redraw.data.replay import Replay
    from redraw.stages import env_settings
    from redraw.stages.evaluate import policy_returns
    from redraw.stages.train_policy import TrainPolicyConfig

    params = load_params("params.yaml")
    cfg = section(params, "train_policy", TrainPolicyConfig, "params.yaml")
    torch.manual_seed(args.seed)
    agent = load_agent("models/oracle/agent.pt")
    agent.requires_grad_(False)
    if not args.keep_actor_critic:
        agent.reset_actor_critic()
    agent.ac.requires_grad_(True)
    agent.ac.slow_critic.requires_grad_(False)
    agent.cfg.imag_starts = cfg.imag_starts
    agent.seed(args.seed)
    replay = Replay(list(agent.obs_spec) + ["action", "reward", "is_first", "is_terminal"], cfg.batch_length,
                    seed=args.seed)
    for _, episode in iter_episodes(args.starts):
        replay.add(episode)
    start = time.perf_counter()
    for update in range(args.updates):
        metrics = agent.policy_step(replay.sample(cfg.batch_size))
        if (update + 1) % 250 == 0 or update + 1 == args.updates:
            print(f"update {update + 1} ({time.perf_counter() - start:.0f} s): imagined return "
                  f"{metrics['ac/return']:.2f}, imagined reward {metrics['ac/imag_reward']:.3f}", flush=True)
    out = Path("reports/policy_stage_control.pt")
    save_checkpoint(out, {"agent": agent.checkpoint_state()},
                    load_checkpoint("models/oracle/agent.pt", map_location="cpu")["identity"])
    returns, _ = policy_returns(str(out), get(params, "env.target", "params.yaml"), env_settings(params),
                                args.episodes, args.seed, progress=False)
    print(f"target return over {args.episodes} episodes: {np.mean(returns):.1f} ({', '.join(f'{r:.1f}' for r in returns)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Policy-stage learning curve: a frozen world model, a fresh actor-critic, returns on the target.

By default takes the oracle's world model (trained online on the target system, so its dynamics
are right by construction), re-initialises the actor-critic and trains it as ``train_policy``
does (imagination from the posterior states of the episodes in ``--starts``, frozen reward
head), evaluating on the target simulator every ``--eval-every`` updates. If this policy fails
too, the policy stage is what fails, not the latent residual. ``--world-model`` points it at any
other agent checkpoint instead (e.g. ``models/calibrate/redraw/agent.pt``: ReDRAW's policy
stage with its learning curve). Runs in a quality-benchmark work directory:

    redraw experiment policy_stage_control ~/.local/state/redraw/transfer-quality/pendulum-swingup-reversed/cpu-seed0 --updates 5000
    redraw experiment policy_stage_control WORKDIR --lr 1e-4 --eval-every 1000 --out lr1e-4
    redraw experiment policy_stage_control WORKDIR --world-model models/calibrate/redraw/agent.pt

Writes ``reports/policy_stage_control/<out>.json`` (the curve and the settings) in WORKDIR.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path, help="a quality-benchmark work directory (has models/, data/, params.yaml)")
    parser.add_argument("--world-model", default="models/oracle/agent.pt",
                        help="agent checkpoint whose world model is used, relative to WORKDIR (default: the oracle's)")
    parser.add_argument("--updates", type=int, default=None,
                        help="actor-critic updates in imagination (default: the params' train_policy.updates)")
    parser.add_argument("--lr", type=float, default=None,
                        help="actor and critic learning rate (default: the params' train_policy.lr, else actor_critic.lr)")
    parser.add_argument("--starts", default="data/target", help="episodes whose posterior states start imagination")
    parser.add_argument("--env", choices=("target", "source"), default="target",
                        help="evaluate in env.target (default) or env.source (with the pretrained source model "
                        "and source episodes as starts: the policy stage's test with no dynamics gap at all)")
    parser.add_argument("--episodes", type=int, default=5, help="evaluation episodes per point (default 5)")
    parser.add_argument("--eval-every", type=int, default=0, help="also evaluate every N updates (default: at the end only)")
    parser.add_argument("--keep-actor-critic", action="store_true",
                        help="start from the checkpoint's own actor-critic (with --updates 0: checks that this "
                        "script's evaluation reproduces that policy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="control", help="name of the JSON report (default: control)")
    args = parser.parse_args(argv)

    if not (args.workdir / args.world_model).is_file():
        parser.error(f"{args.workdir / args.world_model}: no such checkpoint; run the quality benchmark "
                     "(or `dvc repro oracle`) in this directory first")
    os.chdir(args.workdir)
    from redraw.config import get, load_params, section
    from redraw.data.episodes import iter_episodes
    from redraw.data.replay import Replay, batch_keys
    from redraw.envs import make_env
    from redraw.envs.pair import env_settings
    from redraw.perf import tune_allocator
    from redraw.stages.train_policy import TrainPolicyConfig, evaluate_in_target, policy_stage_agent

    params = load_params("params.yaml")
    cfg = section(params, "train_policy", TrainPolicyConfig, "params.yaml")
    updates = cfg.updates if args.updates is None else args.updates
    lr = args.lr or cfg.lr or None
    tune_allocator()
    agent = policy_stage_agent(args.world_model, not args.keep_actor_critic, lr or 0.0, cfg.imag_starts, args.seed)
    replay = Replay(batch_keys(agent.obs_spec), cfg.batch_length,
                    seed=args.seed)
    for _, episode in iter_episodes(args.starts):
        replay.add(episode)
    out_dir = Path("reports/policy_stage_control")
    out_dir.mkdir(parents=True, exist_ok=True)
    env_name = get(params, f"env.{args.env}", "params.yaml")
    env = make_env(env_name, seed=args.seed + 3, **env_settings(params))  # as the evaluate stage seeds it
    curve: list[dict] = []

    def evaluate(update: int, metrics: dict) -> None:
        returns = evaluate_in_target(agent, env, args.episodes, args.seed, point=len(curve))
        curve.append({"update": update, "return_mean": float(np.mean(returns)), "returns": returns,
                      **{k: metrics[k] for k in ("ac/return", "ac/imag_reward", "ac/entropy") if k in metrics}})
        print(f"update {update}: {env_name} return {np.mean(returns):.1f} ({', '.join(f'{r:.0f}' for r in returns)})",
              flush=True)

    start, metrics = time.perf_counter(), {}
    for update in range(updates):
        metrics = agent.policy_step(replay.sample(cfg.batch_size))
        if (update + 1) % 250 == 0 or update + 1 == updates:
            print(f"update {update + 1} ({time.perf_counter() - start:.0f} s): imagined return "
                  f"{metrics['ac/return']:.2f}, imagined reward {metrics['ac/imag_reward']:.3f}, "
                  f"entropy {metrics['ac/entropy']:.2f}", flush=True)
        if args.eval_every and (update + 1) % args.eval_every == 0 and update + 1 != updates:
            evaluate(update + 1, metrics)
    evaluate(updates, metrics)
    env.close()
    (out_dir / f"{args.out}.json").write_text(json.dumps({
        "world_model": args.world_model, "starts": args.starts, "env": env_name, "updates": updates, "lr": lr or "default",
        "keep_actor_critic": args.keep_actor_critic, "seed": args.seed, "imag_starts": cfg.imag_starts,
        "seconds": round(time.perf_counter() - start, 1), "curve": curve}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

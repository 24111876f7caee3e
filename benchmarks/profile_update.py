"""Where the time of one pretraining update goes: phases and the top operators (torch.profiler).

    python benchmarks/profile_update.py                       # cpu preset, the default path
    python benchmarks/profile_update.py --eager --fp32        # the reference path
    python benchmarks/profile_update.py --case "paper size + Plan2Explore" --iters 1
    python benchmarks/profile_update.py --case "quick preset" --set pretrain.imag_starts=64   # another size

Phases: the world-model loss (forward), its backward and optimiser step, imagination (the task
actor's rollout in the latent dynamics) and the actor-critic update (and, with Plan2Explore, the
ensemble and the explorer's rollout and update), timed by wrapping the agent's own methods; then
the operators with the most self time over ``--iters`` profiled updates. docs/performance.md
holds what this printed on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import CASES, build  # noqa: E402
from redraw.experiments.transfer_quality import parse_set  # noqa: E402


#: params keys that the script's flags set, refused in --set
FLAG_KEYS = {"perf.compile": "--eager", "pretrain.bf16": "--fp32", "perf.fused_chain": "--no-fused-chain",
             "perf.fused_adam": "--no-fused-adam", "perf.threads": "--threads"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/profile_update.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=list(CASES), default="cpu preset", help="sizes (default: cpu preset)")
    parser.add_argument("--eager", action="store_true", help="perf.compile off (default: on)")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast (default: the preset's pretrain.bf16)")
    parser.add_argument("--no-fused-chain", action="store_true",
                        help="perf.fused_chain off: DRAW's prior chain and the RSSM's observe chain step by step through autograd")
    parser.add_argument("--no-fused-adam", action="store_true",
                        help="perf.fused_adam off: torch's default Adam implementation")
    parser.add_argument("--kernel-profile", action="store_true",
                        help="name each compiled kernel in the operator table (Inductor's "
                             "cpp.enable_kernel_profile; the kernels are compiled again with it)")
    parser.add_argument("--imagine-chunk", type=int, default=0, metavar="N",
                        help="imagined steps per compiled call (default: the world model's IMAGINE_CHUNK; 1: step by step)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--iters", type=int, default=5, help="timed and profiled updates (default: 5)")
    parser.add_argument("--top", type=int, default=20, help="operators listed (default: 20)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml key on top of the case's preset, e.g. pretrain.imag_starts=64 (repeatable)")
    args = parser.parse_args(argv)
    try:
        overrides = parse_set(args.overrides)
    except ValueError as exc:
        parser.error(str(exc))
    if args.imagine_chunk < 0:
        parser.error(f"--imagine-chunk must be at least 1, got {args.imagine_chunk}")
    # these keys are this script's own flags' (a --set of them would be overwritten by the flag's default)
    for key, flag in FLAG_KEYS.items():
        if key in overrides:
            parser.error(f"--set {key}: use {flag} (this script sets {key} from it)")

    import torch
    from torch.profiler import ProfilerActivity, profile

    from redraw.config import ConfigError

    if args.kernel_profile:
        import torch._inductor.config

        torch._inductor.config.cpp.enable_kernel_profile = True
    try:
        agent, env, batch, pre = build(args.case, not args.eager, False if args.fp32 else None, args.threads,
                                       fused_chain=False if args.no_fused_chain else None,
                                       fused_adam=False if args.no_fused_adam else None, overrides=overrides)
    except ConfigError as exc:
        parser.error(str(exc))
    agent_cfg = agent.cfg
    if args.imagine_chunk:
        agent.wm.IMAGINE_CHUNK = args.imagine_chunk
    for _ in range(3):  # warm-up (and compilation)
        agent.train_step(batch)

    spent: dict[str, float] = {}

    def timed(obj, name: str, label: str) -> None:
        fn = getattr(obj, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - t
            return out

        setattr(obj, name, wrapper)

    timed(agent.wm, "loss", "world-model loss (forward)")
    timed(agent.wm, "imagine", "imagination (all rollouts)")
    timed(agent.ac, "update", "actor-critic update")
    if agent.explorer is not None:
        timed(agent.disagreement, "update", "Plan2Explore ensemble update")
        timed(agent.explorer, "update", "explorer actor-critic update")
    t = time.perf_counter()
    for _ in range(args.iters):
        agent.train_step(batch)
    total = (time.perf_counter() - t) / args.iters
    print(f"{args.case}: {'eager' if args.eager else 'compiled'}, {agent.precision}, "
          f"{torch.get_num_threads()} thread(s), batch {pre.batch_size}x{pre.batch_length}, "
          f"imagination starts {pre.imag_starts or pre.batch_size * pre.batch_length}, horizon {agent_cfg.ac.horizon} "
          f"in chunks of {agent.wm.IMAGINE_CHUNK}")
    print(f"whole update {total * 1e3:.1f} ms")
    for label, sec in spent.items():
        print(f"  {label:34s} {sec / args.iters * 1e3:8.1f} ms  {sec / args.iters / total:4.0%}")
    rest = total - sum(spent.values()) / args.iters
    print(f"  {'world-model backward + step, rest':34s} {rest * 1e3:8.1f} ms  {rest / total:4.0%}")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.iters):
            agent.train_step(batch)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

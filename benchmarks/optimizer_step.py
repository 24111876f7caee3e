"""One Adam step of each of the agent's optimizers at a preset's sizes: torch's default
implementation (on a CPU a loop over the tensors) against its fused kernel (``perf.fused_adam``),
alternating in one process. Prints milliseconds per step and the ratio per optimizer."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def step_ms(params, grads, fused: bool, steps: int) -> float:
    import torch

    ps = [p.detach().clone().requires_grad_() for p in params]
    for p, g in zip(ps, grads):
        p.grad = g.clone()
    opt = torch.optim.Adam(ps, 1e-4, eps=1e-8, **({"fused": True} if fused else {}))
    for _ in range(5):  # warm-up: the state exists
        opt.step()
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps * 1e3


def main(argv: list[str] | None = None) -> int:
    from train_speed import CASES, build

    parser = argparse.ArgumentParser(prog="python benchmarks/optimizer_step.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=list(CASES), default="cpu preset", help="sizes (default: cpu preset)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, as the CPU presets; 0: torch's default)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per measurement (default: 50)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    agent = build(args.case, compile=False)[0]
    total = {False: 0.0, True: 0.0}
    for name, opt in agent.optimizers().items():
        params = [p for g in opt.param_groups for p in g["params"]]
        grads = [torch.randn_like(p) * 1e-3 for p in params]
        ms = {False: [], True: []}
        for fused in (False, True, False, True):  # alternating: the machine's drift hits both
            ms[fused].append(step_ms(params, grads, fused, args.steps))
        best = {k: min(v) for k, v in ms.items()}
        for k in total:
            total[k] += best[k]
        size = sum(p.numel() for p in params) / 1e6
        print(f"{name:16s} {len(params):3d} tensors {size:5.2f}M  default {best[False]:7.3f} ms  "
              f"fused {best[True]:7.3f} ms  {best[False] / best[True]:.2f}x")
    print(f"all optimizers: default {total[False]:.2f} ms, fused {total[True]:.2f} ms per update, "
          f"speed-up {total[False] / total[True]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What one matrix product of the update's sizes costs on this CPU, by dtype and weight layout.

The agent update is a long chain of small products: the world model's prior chain at batch 16,
imagination at 128-256 starts, the actor-critic on ~5k imagined states. This prints, for each
size, the time of ``F.linear`` in fp32, in bf16, under bf16 autocast (fp32 inputs cast on every
call, as the training stages run it) and with the weight packed once for oneDNN
(``torch.ops.mkldnn._reorder_linear_weight``, what Inductor does for frozen inference weights),
and each one's ratio to plain bf16 measured in the same run::

    python benchmarks/matmul_sizes.py [--threads 1] [--reps 400]

A packed weight has no autograd: it could serve only the no-gradient imagination rollout.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

#: (rows, in, out): the prior chain's rows (16), imagination's (128), a policy update's
#: imagination (256), the world model's batch (1024) and the actor-critic's (5120)
SIZES = [(m, k, n) for m in (16, 128, 256, 1024, 5120) for k, n in ((256, 256), (257, 256), (256, 128))]


def timed(fn, reps: int) -> float:
    """Mean time of ``fn`` in microseconds over ``reps`` calls, after a warm-up."""
    for _ in range(max(10, reps // 20)):
        fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e6


def measure(m: int, k: int, n: int, reps: int) -> dict[str, float]:
    x, w = torch.randn(m, k), torch.randn(n, k)
    xb, wb = x.bfloat16(), w.bfloat16()
    out = {"fp32": timed(lambda: F.linear(x, w), reps), "bf16": timed(lambda: F.linear(xb, wb), reps)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out["autocast"] = timed(lambda: F.linear(x, w), reps)
    if torch.backends.mkldnn.is_available():
        packed = torch.ops.mkldnn._reorder_linear_weight(wb, m)
        if not torch.equal(torch.ops.mkldnn._linear_pointwise(xb, packed, None, "none", [], ""), F.linear(xb, wb)):
            raise AssertionError(f"the packed product differs from F.linear at {m}x{k}x{n}")
        out["packed"] = timed(lambda: torch.ops.mkldnn._linear_pointwise(xb, packed, None, "none", [], ""), reps)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/matmul_sizes.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the CPU presets' setting)")
    parser.add_argument("--reps", type=int, default=400, help="timed calls per measurement (default 400)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.reps < 1:
        parser.error("--threads and --reps must be at least 1")
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}; microseconds per product (ratio to plain bf16 in brackets)")
    print(f"{'rows x in x out':>18}  {'fp32':>14}  {'bf16':>8}  {'autocast':>14}  {'packed bf16':>14}  bf16 TFLOP/s")
    for m, k, n in SIZES:
        t = measure(m, k, n, args.reps)

        def cell(key: str) -> str:  # time and ratio to plain bf16; "-" where oneDNN is missing
            return f"{t[key]:7.1f} ({t[key] / t['bf16']:.2f})" if key in t else f"{'-':>14}"

        cells = [cell("fp32"), f"{t['bf16']:8.1f}", cell("autocast"), cell("packed")]
        print(f"{m:>6} x {k:>3} x {n:>3}  " + "  ".join(cells) + f"  {2 * m * k * n / t['bf16'] / 1e6:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""World-model update speed at the paper's size (pixels, batch 16 x 64) on this machine.

Measures, in one run and each in a fresh subprocess: (a) plain fp32 eager, glibc's default
allocator; (b) the project's default path (bf16 autocast + allocator tuning). Prints updates/s,
the speed-up, achieved FLOP/s against a bf16 matmul peak measured in the same run, peak RSS and
page faults, plus imagination throughput (latent steps/s at horizon 40).

    python benchmarks/wm_update_speed.py [--iters 5] [--preset paper|cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def matmul_peak(dtype_name: str, n: int = 2048, reps: int = 10) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def sizes(preset: str):
    from redraw.models.draw import WorldModelConfig

    if preset == "paper":
        return WorldModelConfig()
    return WorldModelConfig(latent_vars=32, hidden=256, cnn_depth=16, mlp_units=256, mlp_layers=2, head_units=256)


def worker(mode: str, iters: int, preset: str) -> dict:
    import torch

    from redraw.models.draw import DRAW, LatentState
    from redraw.perf import tune_allocator

    if mode == "default":
        tune_allocator()
    bf16 = mode == "default"
    torch.manual_seed(0)
    spec = {"image": ((64, 64, 3), "uint8"), "velocity": ((2,), "float32")}
    wm = DRAW(spec, 2, sizes(preset))
    opt = torch.optim.Adam(wm.parameters(), 1e-4, eps=1e-8)
    B, T = 16, 64
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randint(0, 255, (B, T, 64, 64, 3), dtype=torch.uint8, generator=g),
        "velocity": torch.randn(B, T, 2, generator=g),
        "action": torch.rand(B, T, 2, generator=g) * 2 - 1,
        "reward": torch.rand(B, T, generator=g),
        "is_first": torch.zeros(B, T, dtype=torch.bool),
        "is_terminal": torch.zeros(B, T, dtype=torch.bool),
    }
    batch["is_first"][:, 0] = True

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _, out = wm.loss(batch, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wm.parameters(), 1000.0)
        opt.step()
        return out

    from torch.utils.flop_counter import FlopCounterMode

    for _ in range(2):
        out = step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.perf_counter()
    for _ in range(iters):
        out = step()
    dt = (time.perf_counter() - t) / iters
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / iters
    start = LatentState(out["belief"].detach().flatten(0, 1), out["post_z"].detach().flatten(0, 1))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        wm.imagine(lambda z: torch.zeros(z.shape[0], 2), start, 5, generator=g)
        t = time.perf_counter()
        wm.imagine(lambda z: torch.zeros(z.shape[0], 2), start, 40, generator=g)
        imag = start.z.shape[0] * 40 / (time.perf_counter() - t)
    return {"seconds_per_update": dt, "flops_per_update": flops, "page_faults_per_update": faults,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "imag_steps_per_s": imag}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5, help="timed updates per path (default: 5)")
    parser.add_argument("--preset", choices=["paper", "cpu"], default="paper", help="model size (default: paper)")
    parser.add_argument("--worker", choices=["fp32", "default"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.iters, args.preset)))
        return
    results = {}
    for mode in ("fp32", "default"):
        proc = subprocess.run([sys.executable, __file__, "--worker", mode, "--iters", str(args.iters),
                               "--preset", args.preset], capture_output=True, text=True, check=True)
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    peak = matmul_peak("bfloat16")
    peak32 = matmul_peak("float32")
    ref, ours = results["fp32"], results["default"]
    print(f"DRAW world-model update, {args.preset} size, pixels 64x64 + velocity, batch 16 x 64")
    print(f"matmul peak (2048^2): bf16 {peak / 1e12:.2f} TFLOP/s, fp32 {peak32 / 1e12:.2f} TFLOP/s")
    for name, r in (("fp32 eager, default allocator", ref), ("redraw default (bf16 + allocator)", ours)):
        print(f"{name:36s} {1 / r['seconds_per_update']:6.2f} updates/s  {r['seconds_per_update']:.3f} s/update  "
              f"{r['flops_per_update'] / r['seconds_per_update'] / 1e12:.2f} TFLOP/s  "
              f"peak RSS {r['peak_rss_gb']:.1f} GB  {r['page_faults_per_update']:.0f} page faults/update  "
              f"imagination {r['imag_steps_per_s']:.0f} latent steps/s")
    print(f"speed-up over fp32 eager: {ref['seconds_per_update'] / ours['seconds_per_update']:.2f}x (goal >= 3x)")
    print(f"default path at {ours['flops_per_update'] / ours['seconds_per_update'] / peak:.0%} of the bf16 matmul peak "
          f"(goal >= 25%)")


if __name__ == "__main__":
    main()

"""World-model update speed at the paper's size (pixels, batch 16 x 64) on this machine.

Measures, in one run and each in a fresh subprocess: (a) plain fp32 eager, glibc's default
allocator; (b) the project's default path (allocator tuning, and bf16 autocast where the device
multiplies bf16 natively, as ``pretrain.bf16: auto``; fp32 elsewhere). Prints updates/s,
the speed-up, achieved FLOP/s against a bf16 matmul peak measured in the same run, peak RSS and
page faults, plus imagination throughput (latent steps/s at horizon 40).

    python benchmarks/wm_update_speed.py [--iters 5] [--preset paper|cpu] [--device cpu|cuda] [--agent]

``--device cuda`` runs both paths on the GPU (the paper preset's machine; the matmul peak is then
the GPU's). ``--agent`` also times a whole agent update as the pretrain stage makes it: world
model, actor-critic in imagination (horizon 40, from every posterior state) and Plan2Explore's ensemble and explorer.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def peak_dtype(device: str = "cpu") -> str:
    """The dtype of the default path's matrix products: bf16 where the device multiplies it
    natively (``pretrain.bf16: auto``), else fp32 (an emulated bf16 peak would take minutes to
    measure and mean nothing)."""
    from redraw.perf import native_bf16

    return "bfloat16" if native_bf16(device) else "float32"


def matmul_peak(dtype_name: str, device: str = "cpu", reps: int = 10) -> float:
    import torch

    n = 8192 if device == "cuda" else 2048
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def sizes(preset: str):
    from redraw.models.draw import WorldModelConfig

    if preset == "paper":
        return WorldModelConfig()
    return WorldModelConfig(latent_vars=32, hidden=256, cnn_depth=16, mlp_units=256, mlp_layers=2, head_units=256)


def worker(mode: str, iters: int, preset: str, device: str, agent_update: bool) -> dict:
    import torch

    from redraw.models.draw import DRAW, LatentState
    from redraw.perf import tune_allocator

    if mode == "default":
        tune_allocator()
    from redraw.perf import native_bf16

    bf16 = mode == "default" and native_bf16(device)  # as the stages' pretrain.bf16: auto
    torch.manual_seed(0)
    spec = {"image": ((64, 64, 3), "uint8"), "velocity": ((2,), "float32")}
    wm = DRAW(spec, 2, sizes(preset)).to(device)
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
    batch = {k: v.to(device) for k, v in batch.items()}
    g = torch.Generator(device=device).manual_seed(0)

    def step():
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            loss, _, out = wm.loss(batch, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wm.parameters(), 1000.0)
        opt.step()
        return out

    def timed(fn, n):
        sync(device)
        t = time.perf_counter()
        for _ in range(n):
            result = fn()
        sync(device)
        return (time.perf_counter() - t) / n, result

    from torch.utils.flop_counter import FlopCounterMode

    for _ in range(2):
        out = step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    dt, out = timed(step, iters)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / iters
    start = LatentState(*(x.detach().flatten(0, 1) for x in out["states"]))
    no_action = torch.zeros(start.z.shape[0], 2, device=device)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        wm.imagine(lambda z: no_action, start, 5, generator=g)
        imag_dt, _ = timed(lambda: wm.imagine(lambda z: no_action, start, 40, generator=g), 1)
    result = {"seconds_per_update": dt, "flops_per_update": flops, "page_faults_per_update": faults,
              "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
              "imag_steps_per_s": start.z.shape[0] * 40 / imag_dt}
    if device == "cuda":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    if agent_update:
        from redraw.agent.actor_critic import ActorCriticConfig
        from redraw.agent.agent import Agent, AgentConfig

        del wm, opt
        cfg = AgentConfig(wm=sizes(preset), ac=ActorCriticConfig(**({} if preset == "paper" else {"units": 256})),
                          bf16=bf16, exploration="plan2explore")
        agent = Agent(spec, 2, cfg, device=device)
        agent.seed(0)
        for _ in range(2):
            agent.train_step(batch)
        result["agent_seconds_per_update"], _ = timed(lambda: agent.train_step(batch), iters)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5, help="timed updates per path (default: 5)")
    parser.add_argument("--preset", choices=["paper", "cpu"], default="paper", help="model size (default: paper)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to train (default: cpu)")
    parser.add_argument("--agent", action="store_true",
                        help="also time a whole agent update (world model + actor-critic + Plan2Explore)")
    parser.add_argument("--worker", choices=["fp32", "default"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device on this machine")
    if args.worker:
        print(json.dumps(worker(args.worker, args.iters, args.preset, args.device, args.agent)))
        return
    results = {}
    for mode in ("fp32", "default"):
        proc = subprocess.run([sys.executable, __file__, "--worker", mode, "--iters", str(args.iters),
                               "--preset", args.preset, "--device", args.device, *(["--agent"] if args.agent else [])],
                              capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"the {mode} worker failed:\n{proc.stderr[-4000:]}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    name16 = peak_dtype(args.device)
    peak = matmul_peak(name16, args.device)
    peak32 = matmul_peak("float32", args.device)
    default_name = "redraw default (bf16 + allocator)" if name16 == "bfloat16" else "redraw default (fp32 + allocator)"
    name16 = "bf16" if name16 == "bfloat16" else "fp32 (no native bf16)"
    ref, ours = results["fp32"], results["default"]
    where = args.device
    if args.device == "cuda":
        import torch

        where = torch.cuda.get_device_name()
    print(f"DRAW world-model update, {args.preset} size, pixels 64x64 + velocity, batch 16 x 64, on {where}")
    print(f"matmul peak ({8192 if args.device == 'cuda' else 2048}^2): {name16} {peak / 1e12:.2f} TFLOP/s, "
          f"fp32 {peak32 / 1e12:.2f} TFLOP/s")
    for name, r in (("fp32 eager, default allocator", ref), (default_name, ours)):
        memory = f"peak GPU memory {r['peak_gpu_gb']:.1f} GB" if "peak_gpu_gb" in r else \
            f"peak RSS {r['peak_rss_gb']:.1f} GB  {r['page_faults_per_update']:.0f} page faults/update"
        print(f"{name:36s} {1 / r['seconds_per_update']:6.2f} updates/s  {r['seconds_per_update']:.3f} s/update  "
              f"{r['flops_per_update'] / r['seconds_per_update'] / 1e12:.2f} TFLOP/s  {memory}  "
              f"imagination {r['imag_steps_per_s']:.0f} latent steps/s")
        if "agent_seconds_per_update" in r:
            print(f"{'':36s} whole agent update (+ actor-critic + Plan2Explore): {r['agent_seconds_per_update']:.3f} s")
    print(f"speed-up over fp32 eager: {ref['seconds_per_update'] / ours['seconds_per_update']:.2f}x (goal >= 3x on the CPU)")
    print(f"default path at {ours['flops_per_update'] / ours['seconds_per_update'] / peak:.0%} of the {name16} matmul peak "
          f"(goal >= 25% on the CPU)")


if __name__ == "__main__":
    main()

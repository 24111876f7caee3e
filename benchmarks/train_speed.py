"""Training speed: the whole pretraining update, the project's eager path against its default path.

Each path runs in a fresh subprocess, in one run of this script (machines are noisy: only the
ratios measured together count):

- ``eager``: ``perf.compile: false``, ``perf.fused_chain: false``, ``perf.fused_adam: false``
  and fp32 (no bf16 autocast), the reference;
- ``default``: what the training stages run with the preset's settings: bf16 autocast where the
  machine multiplies bf16 natively (``pretrain.bf16: auto``; fp32 elsewhere), DRAW's
  prior chain (and the RSSM's observe chain) as one autograd node (``perf.fused_chain``), Adam's fused
  kernel (``perf.fused_adam``) and the preset's ``perf.compile``
  (``cpu``: on, torch.compile of the imagination steps (8 per graph), the reward / continue heads and the
  actor-critic losses; ``paper``: off).

Sizes: the ``cpu`` preset (proprio ``pendulum-swingup``, its model, batch and imagination starts)
and, unless ``--quick``, the same preset's DreamerV3 RSSM (``pretrain_rssm``, the dreamer_finetune
baseline's pretraining), the same preset with Plan2Explore (the paper's pretraining) and the
``paper`` preset's (64x64 pixels + joint velocities, with and without Plan2Explore). Per path:
seconds per update, achieved FLOP/s against a matmul peak (bf16 where native, else fp32) measured
in the same run, the first update's time (compilation), peak memory, and the agent steps/s of the
online loop (acting in the env with the actor, one env and 4 stepped together). Where the
``cpu`` preset is measured (the default, ``--quick``), the last line reads ``speed-up cpu preset:
N.NNx`` (eager time / default time).

    python benchmarks/train_speed.py --quick          # cpu preset only (a few minutes)
    python benchmarks/train_speed.py                  # + paper size (long on a CPU)
    python benchmarks/train_speed.py --case "paper size + Plan2Explore" --iters 2 --rounds 1
    python benchmarks/train_speed.py --device cuda    # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

CASES = {  # name -> (preset, obs_mode, exploration, world model)
    "cpu preset": ("cpu", "proprio", "task", "draw"),
    "cpu preset RSSM": ("cpu", "proprio", "task", "rssm"),  # pretrain_rssm: the dreamer_finetune baseline's
    "quick preset": ("quick", "proprio", "task", "draw"),  # make repro's pretrain and oracle
    "quick preset RSSM": ("quick", "proprio", "task", "rssm"),  # make repro's longest stage
    "cpu preset + Plan2Explore": ("cpu", "proprio", "plan2explore", "draw"),  # the paper's pretraining, cpu sizes
    "bench preset + Plan2Explore": ("bench", "proprio", "plan2explore", "draw"),  # the shipped models' size
    "bench preset RSSM": ("bench", "proprio", "task", "rssm"),  # the shipped RSSMs'
    "paper size": ("paper", "pixels", "task", "draw"),
    "paper size + Plan2Explore": ("paper", "pixels", "plan2explore", "draw"),
}


from wm_update_speed import matmul_peak, peak_dtype, sync  # noqa: E402  (one measurement of the peak for both)


def preset_params(preset: str, obs_mode: str) -> dict:
    from redraw.config import load_params

    params = load_params(ROOT / "params.yaml")
    overrides = load_params(ROOT / "presets" / f"{preset}.yaml")
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(params.get(key), dict):
            params[key] = {**params[key], **value}
        else:
            params[key] = value
    params["env"]["obs_mode"] = obs_mode
    return params


def synthetic_batch(obs_spec: dict, action_size: int, B: int, T: int):
    import torch

    g = torch.Generator().manual_seed(0)
    batch = {}
    for key, (shape, dtype) in obs_spec.items():
        batch[key] = (torch.randint(0, 255, (B, T, *shape), dtype=torch.uint8, generator=g) if dtype == "uint8"
                      else torch.randn(B, T, *shape, generator=g))
    batch["action"] = torch.rand(B, T, action_size, generator=g) * 2 - 1
    batch["reward"] = torch.rand(B, T, generator=g)
    batch["is_first"] = torch.zeros(B, T, dtype=torch.bool)
    batch["is_first"][:, 0] = True
    batch["is_terminal"] = torch.zeros(B, T, dtype=torch.bool)
    return batch


#: envs stepped together in the online loop's second measurement (the paper's pretrain.envs)
VECTOR = 4


def make_case_env(case: str):
    """One more env of ``case`` as ``build`` makes it."""
    from redraw.envs import make_env
    from redraw.envs.pair import env_settings

    preset, obs_mode, *_ = CASES[case]
    params = preset_params(preset, obs_mode)
    return make_env(params["env"]["source"], seed=1, **env_settings(params))


def build(case: str, compile: bool | None = None, bf16: bool | None = None, threads: int = 0, device: str = "cpu",
          fused_chain: bool | None = None, fused_adam: bool | None = None, overrides: dict | None = None,
          flag: str = "--set"):
    """A freshly seeded agent for ``case`` as the pretraining stage makes it (the preset's
    ``perf.compile``, ``perf.fused_chain``, ``perf.fused_adam`` and ``pretrain.bf16`` unless given), its env and a
    synthetic batch. ``overrides``: dotted params keys set on the preset's params first (a key they do
    not have: ConfigError naming it and ``flag``, the option it came with)."""
    import torch

    from redraw import perf
    from redraw.agent.configs import configs_from_params
    from redraw.agent.agent import Agent
    from redraw.config import get
    from redraw.envs import make_env
    from redraw.envs.pair import env_settings

    preset, obs_mode, exploration, world_model = CASES[case]
    params = preset_params(preset, obs_mode)
    for dotted, value in (overrides or {}).items():
        get(params, dotted, flag)  # ConfigError naming a key the params do not have
        parent, _, leaf = dotted.rpartition(".")
        (get(params, parent) if parent else params)[leaf] = value
    params["pretrain"]["exploration"] = exploration
    params["perf"] = {**params.get("perf", {}), "threads": threads}
    if compile is not None:
        params["perf"]["compile"] = compile
    if fused_chain is not None:
        params["perf"]["fused_chain"] = fused_chain
    if fused_adam is not None:
        params["perf"]["fused_adam"] = fused_adam
    if bf16 is not None:
        params["pretrain"]["bf16"] = bf16
    where = f"the {preset} preset + {flag}" if overrides else f"the {preset} preset"  # what a bad value's error names
    cfg = perf.perf_config(params, where)
    perf.apply(cfg)
    agent_cfg, pre = configs_from_params(params, where, world_model=world_model)
    agent_cfg.compile = cfg.compile
    env = make_env(params["env"]["source"], seed=1, **env_settings(params))
    torch.manual_seed(0)
    agent = Agent(env.observation_spec(), env.action_size, agent_cfg, device=device)
    agent.use_perf(cfg)
    agent.seed(0)
    batch = synthetic_batch(env.observation_spec(), env.action_size, pre.batch_size, pre.batch_length)
    return agent, env, batch, pre


def worker(case: str, path: str, iters: int, device: str, env_steps: int) -> dict:
    import numpy as np
    import torch

    from redraw import perf
    from redraw.agent.agent import AgentPolicy

    # eager: the reference (fp32, nothing compiled, the prior chain step by step, torch's default
    # Adam); default: the preset's own
    ref = False if path == "eager" else None
    agent, env, batch, _ = build(case, ref, ref, device=device, fused_chain=ref, fused_adam=ref)

    def timed(n: int) -> float:
        sync(device)
        t = time.perf_counter()
        for _ in range(n):
            agent.train_step(batch)
        sync(device)
        return (time.perf_counter() - t) / n

    first = timed(1)  # compiles on the default path
    timed(2)
    seconds = timed(iters)
    flops = None
    if path == "eager":  # counted on the eager path (the compiled one hides its ops from the counter)
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            agent.train_step(batch)
        flops = counter.get_total_flops()
    # the online loop's acting: the actor (the explorer where there is one) in the env, one step at a time
    policy = AgentPolicy(agent, sample=True, explore=True)
    obs, t, steps = env.reset(seed=0), time.perf_counter(), 0
    while steps < env_steps:
        obs, _, last, _ = env.step(policy.act(obs))
        steps += 1
        if last:
            policy.reset()
            obs = env.reset(seed=steps)
    env_rate = steps / (time.perf_counter() - t)
    # the same with VECTOR envs stepped together, one batched policy call per step (pretrain.envs)
    envs = [env, *(make_case_env(case) for _ in range(VECTOR - 1))]
    policy.reset_batch([np.random.default_rng(i) for i in range(VECTOR)])
    obs = [e.reset(seed=i) for i, e in enumerate(envs)]
    t, steps = time.perf_counter(), 0
    while steps < env_steps:
        ended = False
        for i, (e, action) in enumerate(zip(envs, policy.act_batch(obs))):
            obs[i], _, last, _ = e.step(action)
            ended = ended or last
        steps += VECTOR
        if ended:  # dm_control's episodes have one length: all of them end together
            policy.reset_batch([np.random.default_rng(steps + i) for i in range(VECTOR)])
            obs = [e.reset(seed=steps + i) for i, e in enumerate(envs)]
    vector_rate = steps / (time.perf_counter() - t)
    for e in envs:
        e.close()
    out = {"seconds_per_update": seconds, "first_update_seconds": first, "flops_per_update": flops,
           "compile_seconds": sum(perf.COMPILE_SECONDS.values()), "agent_steps_per_s": env_rate,
           "vector_agent_steps_per_s": vector_rate,
           "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "threads": torch.get_num_threads()}
    if device == "cuda":
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def threads_peak(threads: int) -> float:
    """The default path's matmul peak (FLOP/s; bf16 where native, else fp32) with ``threads``
    torch threads, measured now."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return matmul_peak(peak_dtype("cpu"), "cpu")
    finally:
        torch.set_num_threads(before)


def run_worker(case: str, path: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", case, path, "--iters", str(args.iters), "--device", args.device,
           "--env-steps", str(args.env_steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        sys.exit(f"the {path} worker for {case} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/train_speed.py", description=__doc__.split("\n\n")[0],
                                     epilog="Where the cpu preset is measured (the default, --quick) the last line is "
                                            "'speed-up cpu preset: N.NNx' (eager / default).")
    parser.add_argument("--quick", action="store_true", help="the cpu preset only (skip the paper size)")
    parser.add_argument("--case", action="append", choices=list(CASES), metavar="CASE",
                        help="measure only this case (repeatable; default: all, or the cpu preset with --quick): "
                             + ", ".join(f"'{c}'" for c in CASES))
    parser.add_argument("--iters", type=int, default=10, help="timed updates per path (default: 10)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="eager/default pairs of subprocesses per case, alternated; the median is kept (default: 2)")
    parser.add_argument("--env-steps", type=int, default=200, help="agent steps timed in the online loop (default: 200)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to train (default: cpu)")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.iters < 1 or args.rounds < 1:
        parser.error("--iters and --rounds must be at least 1")
    if args.quick and args.case:
        parser.error("--quick and --case: give one (--quick is --case 'cpu preset')")
    if args.worker:
        print(json.dumps(worker(*args.worker, args.iters, args.device, args.env_steps)))
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device on this machine")
    os.environ.setdefault("MUJOCO_GL", "egl")
    dtype = peak_dtype(args.device)
    peak = matmul_peak(dtype, args.device)
    dtype = "bf16" if dtype == "bfloat16" else "fp32 (this machine has no native bf16: both paths run fp32)"
    print(f"{dtype} matmul peak measured now ({8192 if args.device == 'cuda' else 2048}^2): {peak / 1e12:.2f} TFLOP/s; "
          f"{os.cpu_count()} cores")
    wanted = ["cpu preset"] if args.quick else args.case or list(CASES)
    cases = [c for c in CASES if c in wanted]
    ratios = {}
    for case in cases:
        runs = {"eager": [], "default": []}
        for _ in range(args.rounds):
            for path in runs:
                runs[path].append(run_worker(case, path, args))
        row = {path: min(rs, key=lambda r: r["seconds_per_update"]) for path, rs in runs.items()}
        med = {path: statistics.median(r["seconds_per_update"] for r in rs) for path, rs in runs.items()}
        flops = row["eager"]["flops_per_update"]
        print(f"\n{case} ({'/'.join(CASES[case][:2])}, exploration {CASES[case][2]}, {CASES[case][3]}), "
              f"{args.rounds} round(s) of {args.iters} updates:")
        for path, r in row.items():
            memory = f"peak GPU {r['peak_gpu_gb']:.1f} GB" if "peak_gpu_gb" in r else f"peak RSS {r['peak_rss_gb']:.1f} GB"
            print(f"  {path:8s} {med[path] * 1e3:8.1f} ms/update (median)  {flops / med[path] / 1e12:5.2f} TFLOP/s "
                  f"= {flops / med[path] / peak:4.0%} of peak  first update {r['first_update_seconds']:5.1f} s "
                  f"(compile {r['compile_seconds']:.1f} s)  {memory}  online loop {r['agent_steps_per_s']:.0f} "
                  f"agent steps/s ({r['vector_agent_steps_per_s']:.0f} with {VECTOR} envs together)  "
                  f"threads {r['threads']}")
        ratios[case] = med["eager"] / med["default"]
        if args.device == "cpu":  # how far the default path could go: all its FLOPs at the matmul peak
            threads = row["default"]["threads"]
            floor = flops / threads_peak(threads)
            print(f"  FLOP floor of the default path: {floor * 1e3:.1f} ms/update at the matmul peak with "
                  f"{threads} thread(s), i.e. at most {med['eager'] / floor:.2f}x over eager")
        print(f"  speed-up {case}: {ratios[case]:.2f}x")
    if "cpu preset" in ratios:  # the line the speed goal is read from, last
        print(f"speed-up cpu preset: {ratios['cpu preset']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One module per DVC stage: a pure ``run(params) -> metrics`` and a thin ``main``."""

from __future__ import annotations

import sys
from typing import Callable


def stage_params(path: str = "params.yaml") -> dict:
    """The params file as every stage's ``main`` reads it: the pair it picks checked first
    (``redraw.envs.pair``), so that a pair that cannot run stops the first stage in seconds."""
    from redraw.config import load_params
    from redraw.envs.pair import check_pair

    params = load_params(path)
    check_pair(params, path)
    return params


def method_run_tags(method: str, target_env: str, fingerprint: str, agent, resumed_at: int) -> dict[str, str]:
    """The MLflow tags of a method's calibration or policy run: what it adapts to and from where it resumed."""
    return {"method": method, "env": target_env, "target_data_hash": fingerprint, "precision": agent.precision,
            "resumed_at_update": str(resumed_at)}


def method_stage_main(stage: str, description: str, run: Callable[..., dict], methods, errors,
                      argv: list[str] | None = None) -> int:
    """``main`` of a per-method stage (``calibrate@METHOD``, ``train_policy@METHOD``):
    ``python -m redraw.stages.STAGE METHOD [--params FILE] [--no-progress]``."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m redraw.stages.{stage}", description=description)
    parser.add_argument("method", choices=sorted(methods), help="the method (the registry: redraw.methods)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    return report_run(f"{stage} {args.method}",
                      lambda: run(args.method, stage_params(args.params), args.params, progress=not args.no_progress),
                      errors)


def report_run(name: str, call: Callable[[], dict], errors: tuple[type[BaseException], ...]) -> int:
    """Run a stage: print its metrics on success (exit 0), or ``name: error: ...`` (exit 2)."""
    try:
        metrics = call()
    except errors as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{name}: " + ", ".join(f"{k}={v:.6g}" for k, v in metrics.items()))
    return 0

"""DVC stages ``evaluate@<method>`` and ``results``: each method's policy on the target system.

``evaluate@<method>`` runs the method's policy for ``evaluate.episodes`` episodes (actions
sampled from the actor; episode i has the same seed for every method) and writes the mean,
std and a 95% confidence interval (Student t) to ``reports/evaluate/<method>.json``.
Methods (``redraw.methods``, each with its policy and env): ``no_adapt`` (the source policy as it
is), the adapted ``draw_finetune``, ``dreamer_finetune``, ``redraw`` and ``redraw_pessimistic``, the
``oracle`` (trained in the target simulator), and ``source`` (the source policy in the *source*
simulator, for reference).

``results`` puts them side by side: ``reports/results.md`` (markdown table),
``reports/results.json`` and ``reports/results.png``.

    python -m redraw.stages.evaluate METHOD [--params params.yaml]
    python -m redraw.stages.evaluate --results [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from redraw.config import ConfigError, get, is_count, section
from redraw.data.collect import policy_returns
from redraw.envs.pair import env_settings
from redraw.methods import REGISTRY, evaluated, references
from redraw.perf import apply as apply_perf
from redraw.perf import perf_config
from redraw.stages import report_run, stage_params
from redraw.stats import summarise
from redraw.tracking import StageRun, write_json, write_metrics


class _Policies(Mapping):
    """method -> (policy checkpoint, the env key it runs in), read from the registry as it is."""

    def __getitem__(self, method: str) -> tuple[str, str]:
        spec = REGISTRY[method]
        return spec.policy_path, spec.env

    def __iter__(self):
        return iter(list(REGISTRY))

    def __len__(self) -> int:
        return len(REGISTRY)


POLICIES = _Policies()
REFERENCES = references()  #: rows that are reference points, not transfer methods (as registered at import)
REPORTS = Path("reports/evaluate")


@dataclass
class EvaluateConfig:
    """Section ``evaluate`` of params.yaml."""

    episodes: int = 10  #: per method (paper: 100)
    #: episodes acted together, one batched policy call per step: only the speed changes, each
    #: episode is the one acted alone, bit for bit (``Agent.act_batch``)
    envs: int = 10
    methods: tuple = field(default_factory=evaluated)  #: rows of the results table, in order


def evaluate_config(params: dict, path: str = "params.yaml") -> EvaluateConfig:
    cfg = section(params, "evaluate", EvaluateConfig, path)
    unknown = [m for m in cfg.methods if m not in POLICIES]
    if unknown:
        raise ConfigError(f"{path}: evaluate.methods names unknown method {unknown[0]!r} "
                          f"(known: {', '.join(POLICIES)})")
    for key in ("episodes", "envs"):
        value = getattr(cfg, key)
        if not is_count(value, 1):
            raise ConfigError(f"{path}: evaluate.{key} must be a whole number of at least 1, got {value!r}")
    return cfg


def run(method: str, params: dict, path: str = "params.yaml", progress: bool = True) -> dict:
    if method not in POLICIES:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(POLICIES)}")
    cfg = evaluate_config(params, path)
    seed = int(get(params, "seed", path))
    # perf.threads, as the training stages: acting at batch 1, a second torch thread only waits for
    # a core (43 ms instead of 1.2 ms per step beside a training, cpu preset)
    apply_perf(perf_config(params, path))
    policy_path, env_key = POLICIES[method]
    if not Path(policy_path).is_file():
        raise FileNotFoundError(f"{policy_path}: no policy for {method}; run `dvc repro evaluate@{method}`")
    env_name = get(params, env_key, path)
    returns, action_sums = policy_returns(policy_path, env_name, env_settings(params, path), cfg.episodes, seed,
                                          progress, desc=f"evaluate {method}", envs=cfg.envs)
    metrics = summarise(returns)
    write_json(REPORTS / f"{method}.json", {**metrics, "method": method, "env": env_name, "policy": policy_path,
                                            "returns": returns, "action_sums": action_sums, "seed": seed})
    with StageRun(f"evaluate@{method}", params, tags={"method": method, "env": env_name}) as tracker:
        tracker.log_metrics(metrics)
        tracker.log_artifacts(REPORTS / f"{method}.json")
    return metrics


def paired_with_no_adapt(rows: list[dict]) -> dict[str, dict]:
    """Per adaptation method (not a reference, not no_adapt itself), ``summarise`` of its per-episode
    return minus no_adapt's on the same test episodes; empty without a no_adapt row."""
    from redraw.stats import paired

    base = next((r for r in rows if r["method"] == "no_adapt"), None)
    if base is None:
        return {}
    return {r["method"]: paired(base["returns"], r["returns"])["difference"] for r in rows
            if not r["reference"] and r["method"] != "no_adapt" and r["env"] == base["env"]}


def results(params: dict, path: str = "params.yaml") -> dict:
    """Gather the evaluations into the results table, its JSON and its plot."""
    cfg = evaluate_config(params, path)
    rows = []
    for method in cfg.methods:
        file = REPORTS / f"{method}.json"
        if not file.is_file():
            raise FileNotFoundError(f"{file}: {method} has not been evaluated; run `dvc repro evaluate@{method}`")
        ev = json.loads(file.read_text())
        row = {"method": method, "env": ev["env"], "mean": ev["return_mean"], "std": ev["return_std"],
               "ci_low": ev["return_ci_low"], "ci_high": ev["return_ci_high"], "episodes": ev["episodes"],
               "reference": method in references()}
        gap = Path("reports/calibrate") / f"{method}.json"
        if gap.is_file():
            g = json.loads(gap.read_text())
            row["kl_source"], row["kl_adapted"] = g["gap/kl_filter_source"], g["gap/kl_filter_adapted"]
        row["returns"] = ev["returns"]
        rows.append(row)
    oracle = next((r["mean"] for r in rows if r["method"] == "oracle"), None)
    paired = paired_with_no_adapt(rows)
    lines = [
        f"# Results: {get(params, 'env.source', path)} -> {get(params, 'env.target', path)}",
        "",
        f"preset `{params.get('preset', '?')}`, seed {get(params, 'seed', path)}, "
        f"{cfg.episodes} episodes per method, actions sampled from the actor; CI: 95% Student t.",
        "",
        "| method | env | return mean | std | 95% CI | % of oracle | held-out latent KL (source -> adapted) |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for r in rows:
        pct = f"{100 * r['mean'] / oracle:.0f}%" if oracle and oracle > 0 else "n/a"
        kl = f"{r['kl_source']:.3f} -> {r['kl_adapted']:.3f}" if "kl_source" in r else ""
        name = f"{r['method']} (reference)" if r["reference"] else r["method"]
        lines.append(f"| {name} | {r['env']} | {r['mean']:.1f} | {r['std']:.1f} | "
                     f"[{r['ci_low']:.1f}, {r['ci_high']:.1f}] | {pct} | {kl} |")
    if paired:
        lines += ["", "Each adaptation against no_adapt on the same test episodes (episode i of both has one seed): "
                  "the mean per-episode difference, 95% Student t; above 0 where the interval is.", "",
                  "| method | minus no_adapt | 95% CI | above no_adapt |", "|---|---:|---|---|"]
        for method, d in paired.items():
            lines.append(f"| {method} | {d['return_mean']:+.1f} | [{d['return_ci_low']:.1f}, "
                         f"{d['return_ci_high']:.1f}] | {'yes' if d['return_ci_low'] > 0 else 'no'} |")
    Path("reports").mkdir(exist_ok=True)
    tmp = Path("reports/.results.md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace("reports/results.md")
    from redraw.plots import results_bars

    results_bars(rows, "reports/results.png",
                 f"{get(params, 'env.source', path)} -> {get(params, 'env.target', path)} ({cfg.episodes} episodes)")
    metrics = {f"{r['method']}/return_mean": r["mean"] for r in rows}
    metrics.update({f"{m}/minus_no_adapt": d["return_mean"] for m, d in paired.items()})
    write_metrics("reports/results.json", metrics)
    with StageRun("results", params) as tracker:
        tracker.log_metrics(metrics)
        tracker.log_artifacts("reports/results.md")
        tracker.log_artifacts("reports/results.png")
    print("\n".join(lines))
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m redraw.stages.evaluate",
                                     description="Evaluate a method's policy on the target system (DVC stage "
                                     "evaluate@METHOD), or gather every evaluation into the results table (--results).")
    parser.add_argument("method", nargs="?", choices=list(POLICIES), help="the policy to evaluate")
    parser.add_argument("--results", action="store_true", help="write reports/results.{md,json,png} (stage results)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.results == (args.method is not None):
        parser.error("give a METHOD or --results")
    errors = (ConfigError, FileNotFoundError, ValueError)
    if args.results:
        return report_run("results", lambda: results(stage_params(args.params), args.params), errors)
    return report_run(f"evaluate {args.method}",
                      lambda: run(args.method, stage_params(args.params), args.params, progress=not args.no_progress),
                      errors)


if __name__ == "__main__":
    sys.exit(main())

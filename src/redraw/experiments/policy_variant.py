"""A policy-stage variant on a finished quality-benchmark work dir, paired per episode with its policy.

The same calibrated model and target data, the policy stage trained again with other settings,
both policies on the same test episodes.

Copies the work dir to ``WORKDIR-variant-NAME`` (the quality benchmark never harvests a copy),
brings in this checkout's code (an option newer than the work dir is then there), sets the
``--set`` keys in the copy's params.yaml and runs only ``train_policy@METHOD`` and
``evaluate@METHOD`` there (as ``dvc repro --single-item``: the calibration and everything before
it are the work dir's, not run again); with several methods their stages run side by side,
``--jobs`` at a time (``redraw.scheduler.schedule``). The variant's evaluation runs the same test
episodes as the work dir's (the final evaluation's seed stream), so the difference is paired per
episode. Resumable: a stopped run continues from the policy stage's checkpoint when the same
command runs again.

    redraw experiment policy_variant --workdir WORKDIR --method redraw --set train_policy.bc_weight=1
    redraw experiment policy_variant --workdir WORKDIR --method redraw draw_finetune --set train_policy.adapt=true

One record per (pair, seed, preset, method, variant) is merged into
``benchmarks/results/policy_variants.json``; ``redraw report`` tabulates them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from redraw.experiments.onpolicy_round import ADAPTED, copy_workdir
from redraw.experiments.provenance import ROOT
from redraw.results_records import merge_keyed
from redraw.scheduler import schedule

RESULTS = ROOT / "benchmarks/results/policy_variants.json"
KEY = ("pair", "seed", "preset", "method", "variant")
CODE = ("src", "dvc.yaml", "scripts")  #: what the copy takes from this checkout


def variant_name(overrides: dict) -> str:
    """``train_policy.bc_weight=1`` -> ``bc_weight=1`` (the last part of each key), joined by ``,``."""
    return ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(overrides.items()))


def variant_dir(workdir: Path, name: str) -> Path:
    return workdir.with_name(f"{workdir.name}-variant-{re.sub(r'[^A-Za-z0-9_.=,-]', '_', name)}")


def set_variant_params(dest: Path, overrides: dict) -> None:
    """The copy's params.yaml with ``overrides`` set (comments kept). A key the copy's file lacks
    but this checkout's params.yaml has (an option newer than the work dir) is added under its
    section; any other unknown key is refused (ConfigError naming it)."""
    from redraw.config import load_params, set_params

    set_params(overrides, dest / "params.yaml", source="--set", known=load_params(ROOT / "params.yaml"))


def paired(base: list[float], variant: list[float]) -> dict:
    """Summaries of the base's and the variant's (``changed``) returns and of their per-episode
    difference, over the test episodes both ran (the same episodes)."""
    from redraw.stats import RECORDED, paired as summaries

    return summaries(base, variant, ("base", "changed"), RECORDED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="a finished quality-benchmark work dir (PRESET-seedN)")
    parser.add_argument("--method", nargs="+", default=["redraw"], choices=ADAPTED,
                        help="whose policy stage runs again; several run side by side (default: redraw)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", required=True,
                        help="a params.yaml key of the policy stage and its value, e.g. train_policy.bc_weight=1; "
                        "repeatable")
    parser.add_argument("--jobs", type=int, default=0,
                        help="stages at a time, the cores split between them (default: one per method, at most "
                             "the cores)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"results file (default: {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)

    from redraw.config import ConfigError, load_params
    from redraw.experiments.transfer_quality import bring_code, parse_set, workdir_commit

    workdir = args.workdir.resolve()
    methods = list(dict.fromkeys(args.method))
    for method in methods:
        base_eval = workdir / f"reports/evaluate/{method}.json"
        if not base_eval.is_file():
            parser.error(f"{base_eval}: missing; run the quality benchmark for {method} in this work dir first")
    if args.jobs < 0:
        parser.error(f"--jobs must be at least 1 (0: one per method), got {args.jobs}")
    try:
        overrides = parse_set(args.overrides)
    except ValueError as exc:
        parser.error(str(exc))
    bad = [k for k in overrides if not k.startswith("train_policy.")]
    if bad:
        parser.error(f"--set {bad[0]}: only train_policy keys change the policy stage alone")
    name = variant_name(overrides)
    dest = variant_dir(workdir, name)
    copy_workdir(workdir, dest)
    bring_code(dest, CODE)
    try:
        set_variant_params(dest, overrides)
    except ConfigError as exc:
        parser.error(str(exc))
    stages = [f"{stage}@{m}" for m in methods for stage in ("train_policy", "evaluate")]
    print(f"== {dest.name}: {', '.join(stages)}", flush=True)
    schedule(dest, args.jobs or min(len(methods), os.cpu_count() or 1), "logs", stages, single=True)
    params = load_params(dest / "params.yaml")
    oracle = workdir / "reports/evaluate/oracle.json"
    from redraw.stats import interval

    for method in methods:
        base = json.loads((workdir / f"reports/evaluate/{method}.json").read_text())["returns"]
        variant = json.loads((dest / f"reports/evaluate/{method}.json").read_text())["returns"]
        result = paired(base, variant)
        record = {"pair": params["env"]["target"], "seed": int(params["seed"]), "preset": params.get("preset", "?"),
                  "method": method, "variant": name, **result,
                  "oracle_return_mean": json.loads(oracle.read_text())["return_mean"] if oracle.is_file() else None,
                  "commit": workdir_commit(dest), "base_commit": workdir_commit(workdir)}
        merge_keyed(args.results, {"records": (KEY, [record])})
        b, v, d = result["base"], result["changed"], result["difference"]
        print(f"{record['pair']} seed {record['seed']} {method}, {name}, on {d['episodes']} test episodes: "
              f"{b['return_mean']:.1f} -> {interval(v)}, paired difference {interval(d)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

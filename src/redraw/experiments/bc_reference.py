"""Behaviour cloning without a world model, on a finished quality-benchmark work dir, paired per episode.

The target data's own actions copied by the agent's actor from the observations
(``redraw.agent.cloning``), evaluated on the same test episodes as every method the work dir
evaluated, paired per episode.

The target data of the paper's protocol are an expert's, so copying its actions is a policy an
engineer could deploy without any world model; a method that learns from the same data should do
better. The cloned policy trains on the episodes the methods calibrated on (the same held-out
episodes left out, the same transition budget), for a fixed number of steps set before any
evaluation (its held-out NLL is recorded, never used to choose anything); it takes about a minute.

    redraw experiment bc_reference --workdir WORKDIR [--steps 20000]

``--top-fraction 0.5`` clones only the half of the episodes with the highest returns
("filtered" cloning, reference ``bc_top50``), for data that mix an expert with weaker behaviour.
The cloned policy's test returns and NLL curve are kept in ``WORKDIR/reports/bc_reference.json``
(``bc_reference_top50.json``; a second run with the same settings reuses them). One record per (pair, seed, preset, target data and
its size, reference, method) compared is merged into ``benchmarks/results/bc_reference.json``; ``redraw report`` tabulates them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from redraw.experiments.provenance import ROOT
from redraw.results_records import CLONE_KEY, merge_keyed, pretrain_seed

RESULTS = ROOT / "benchmarks/results/bc_reference.json"
SKIP = ("source",)  #: evaluations not on the target (the source policy runs in the source env)


def check_workdir(workdir: Path) -> dict[Path, dict]:
    """The work dir's target-env evaluations, read (ValueError names what is missing)."""
    for rel in ("params.yaml", "models/pretrain/agent.pt", "data/target/metadata.json"):
        if not (workdir / rel).exists():
            raise ValueError(f"{workdir / rel}: missing; run the quality benchmark in this work dir first")
    paths = sorted(p for p in (workdir / "reports/evaluate").glob("*.json") if p.stem not in SKIP)
    if not paths:
        raise ValueError(f"{workdir / 'reports/evaluate'}: no method evaluated yet; nothing to compare against")
    return {p: json.loads(p.read_text()) for p in paths}


def clone_and_evaluate(workdir: Path, cfg, episodes: int, progress: bool = True) -> dict:
    """Fit the cloned policy on the work dir's target data and run it on the first ``episodes`` test
    episodes; kept in reports/bc_reference.json and reused for the same settings and target data."""
    from redraw.agent.actor_critic import ActorCriticConfig
    from redraw.agent.cloning import fit
    from redraw.checkpoint import load_checkpoint
    from redraw.config import get, load_params, section
    from redraw.data.collect import run_policy
    from redraw.data.target import load_target
    from redraw.envs import make_env
    from redraw.envs.pair import env_settings
    from redraw.perf import apply as apply_perf
    from redraw.perf import perf_config

    out = workdir / f"reports/{cfg.name.replace('bc', 'bc_reference', 1)}.json"
    settings = {"cloning": asdict(cfg), "reference": cfg.name, "episodes": episodes}
    cwd = os.getcwd()
    os.chdir(workdir)  # the data, the env-pair file and the validation report are the work dir's
    try:
        params = load_params("params.yaml")
        # the work dir's torch threads (1 at the CPU presets): with torch's default of one per core,
        # each small product waits for a core that another process holds (~45x slower beside a training)
        apply_perf(perf_config(params))
        seed, target = int(get(params, "seed")), get(params, "env.target")
        identity = load_checkpoint("models/pretrain/agent.pt", map_location="cpu")["identity"]
        _, train, held, fingerprint = load_target(str(workdir / get(params, "target_data")), identity,
                                                  str(workdir / "models/pretrain/agent.pt"),
                                                  target, int(get(params, "target_transitions")),
                                                  int(get(params, "calibrate.holdout_episodes")))
        if out.is_file():  # reused only for the same settings on the same (validated) data
            kept = json.loads(out.read_text())
            if {k: kept.get(k) for k in settings} == settings and kept.get("target_data") == fingerprint:
                return kept
        policy, curve = fit(train, held, identity["action_size"], section(params, "actor_critic", ActorCriticConfig),
                            cfg, seed, progress)
        env = make_env(target, seed=seed + 3, **env_settings(params))  # as the evaluate stage builds it
        try:
            returns, _ = run_policy(env, policy, episodes, seed, progress, desc="evaluate cloned")
        finally:
            env.close()
    finally:
        os.chdir(cwd)
    from redraw.agent.cloning import select

    data_returns = [float(ep["reward"][1:].sum()) for ep in select(train, cfg.top_fraction)]
    result = {**settings, "target_data": fingerprint, "train_episodes": len(data_returns), "heldout_episodes": len(held),
              "data_return_mean": sum(data_returns) / len(data_returns), "curve": curve, "returns": returns}
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out)
    return result


def trained_on(workdir: Path, evaluation: dict) -> str | None:
    """The fingerprint of the target data the evaluated policy was trained on (None: a policy that
    never saw target data, the source policy or the oracle)."""
    from redraw.checkpoint import load_checkpoint

    policy = workdir / evaluation.get("policy", "")
    if not policy.is_file():
        return None
    return load_checkpoint(policy, map_location="cpu")["identity"].get("target_data")


def records(workdir: Path, result: dict, evaluations: dict[Path, dict], commit: str) -> list[dict]:
    """One record per method evaluated in the work dir: its returns and the cloned policy's on the
    test episodes both ran, and their paired difference (cloned - policy). An evaluation of a
    policy trained on other target data than the work dir's now (a stage not run again after the
    data changed) is left out, and said so."""
    from redraw.config import load_params
    from redraw.results_records import target_data, target_size
    from redraw.stats import RECORDED, paired

    params = load_params(workdir / "params.yaml")
    last = result["curve"][-1]
    rows = []
    for path, ev in evaluations.items():
        if "returns" not in ev:
            raise ValueError(f"{path}: no per-episode returns to pair with")
        if trained_on(workdir, ev) not in (None, result["target_data"]):
            print(f"{path}: its policy ({ev['policy']}) was trained on other target data than "
                  f"{params.get('target_data', 'data/target')} holds now; left out (re-run its stages first)")
            continue
        summary = paired(ev["returns"], result["returns"], ("policy", "cloned"), RECORDED)
        rows.append({"pair": params["env"]["target"], "seed": int(params["seed"]), "preset": params.get("preset"),
                     "pretrain_seed": pretrain_seed(params), "target_data": target_data(params), "target_transitions": target_size(params),
                     "reference": result["reference"], "method": path.stem, **summary,
                     "data_return_mean": round(result["data_return_mean"], 2),
                     "heldout_nll": last.get("heldout_nll"), "train_nll": last["train_nll"],
                     "cloning": result["cloning"], "commit": commit})
    return rows


def run(workdir: Path, results: Path = RESULTS, cfg=None, episodes: int | None = None,
        progress: bool = True) -> tuple[dict, list[dict]]:
    """Clone, evaluate (or reuse what the work dir keeps) and merge the records into ``results``;
    returns the cloned policy's result and the records. ValueError names what is missing or wrong."""
    from redraw.agent.cloning import CloningConfig
    from redraw.experiments.provenance import commit

    evaluations = check_workdir(workdir)
    ran = min(ev.get("episodes", 0) for ev in evaluations.values())
    episodes = episodes or ran
    if not 0 < episodes <= ran:
        raise ValueError(f"--episodes {episodes}: the work dir's evaluations ran {ran} test episodes")
    result = clone_and_evaluate(workdir, cfg or CloningConfig(), episodes, progress)
    rows = records(workdir, result, evaluations, commit())
    merge_keyed(results, {"records": (CLONE_KEY, rows)})
    return result, rows


def summary(workdir: Path, result: dict, rows: list[dict]) -> str:
    """What the cloned policy scored against each method, for the terminal."""
    from redraw.stats import interval

    last = result["curve"][-1]
    lines = [f"{workdir.name}: cloned policy ({result['reference']}) from {result['train_episodes']} target episodes "
             f"(their return {result['data_return_mean']:.1f}), NLL train {last['train_nll']:.2f}, held out "
             f"{last.get('heldout_nll', float('nan')):.2f}; on {result['episodes']} test episodes:"]
    for r in rows:
        lines.append(f"  {r['method']:>20}: {r['policy']['return_mean']:7.1f}   cloned {interval(r['cloned'])}   "
                     f"cloned - {r['method']}: {interval(r['difference'], signed=True)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from redraw.agent.cloning import CloningConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="a finished quality-benchmark work dir (PRESET-seedN)")
    parser.add_argument("--steps", type=int, default=CloningConfig.steps, help="gradient steps (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=CloningConfig.batch_size, help="default %(default)s")
    parser.add_argument("--lr", type=float, default=CloningConfig.lr, help="Adam learning rate (default %(default)s)")
    parser.add_argument("--top-fraction", type=float, default=1.0,
                        help="clone only the episodes of the highest returns, this share of them (e.g. 0.5: "
                        "filtered cloning, for data that mix an expert with weaker behaviour; default 1: all)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="test episodes (default: the work dir's evaluate.episodes; at most as many as it ran)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results file (default %(default)s)")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    try:
        cfg = CloningConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,  # refuses bad ones
                            top_fraction=args.top_fraction)
        result, rows = run(workdir, args.results, cfg, args.episodes)
    except ValueError as exc:
        parser.error(str(exc))
    print(summary(workdir, result, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Return vs round: the rounds loop with the stand-in robot, from a finished quality-benchmark work dir.

The loop is ``redraw rounds`` (docs/rounds.md); the work directory is one that
``redraw experiment transfer_quality`` made (its ``--pretrain-seeds`` starts the trainings from the
shipped pretrained models).

Round 0 is the work dir's own result for METHOD (its evaluate stage). Each round then deploys the
champion on the target simulator standing in for the robot for ``--episodes`` episodes, logged as
MCAP bags and imported through the mapping config, merges them as ``--keep`` says, calibrates,
trains, evaluates, registers and applies the gate. ``--logged-by expert`` is the control: the same
rounds, but the expert acts in the logged episodes (the episodes spent on more expert data).

It works in a copy of the work dir (``WORKDIR-rounds-METHOD-KEEP-eN``, ``-expertlog-`` for the
control), without the copy's MLflow store (the loop registers the work dir's evaluated policy in a
fresh one) and resumes where it stopped. One record per (pair, seed, preset, method, logged_by,
keep, episodes, round) is merged into ``benchmarks/results/rounds.json``:

    redraw experiment rounds --workdir WORKDIR --method redraw --rounds 3 --episodes 20
    redraw experiment rounds --workdir WORKDIR --method redraw --rounds 3 --episodes 20 --logged-by expert

The goal of the loop: at least 90% of the expert's return within two rounds of at most 20 episodes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from redraw.experiments.provenance import ROOT
from redraw.results_records import merge_keyed
from redraw.rounds import COPY_SKIP, Rounds, RoundsConfig, check_workdir, copy_workdir
from redraw.stats import interval

RESULTS = ROOT / "benchmarks/results/rounds.json"
KEY = ("pair", "seed", "preset", "method", "logged_by", "keep", "episodes", "round")
ADAPTED = ("redraw", "redraw_pessimistic", "draw_finetune", "dreamer_finetune")
EXPERT = "models/oracle/agent.pt"
#: a copy leaves out the work dir's MLflow store (its artifact paths are the work dir's) and any loop state
SKIP = (*COPY_SKIP, "mlruns", "rounds")


def rounds_dir(workdir: Path, method: str, keep: str, episodes: int, logged_by: str = "policy") -> Path:
    """The copy the rounds run in: one per method, keep, episodes and who acts in the logs."""
    tag = "rounds" if logged_by == "policy" else "expertlog"
    return workdir.with_name(f"{workdir.name}-{tag}-{method}-{keep.replace(':', '').replace('+', '-')}-e{episodes}")


def summary(ev: dict) -> dict:
    return {k: ev[k] for k in ("return_mean", "return_ci_low", "return_ci_high", "episodes") if k in ev}


def records(workdir: Path, dest: Path, method: str, logged_by: str, commit: str) -> list[dict]:
    """Round 0 (the work dir's evaluation) and every finished round of the copy's loop."""
    manifest = json.loads((dest / "rounds/manifest.json").read_text())
    settings = manifest["settings"]
    base = {"pair": manifest["target"], "seed": manifest["seed"], "preset": manifest["preset"], "method": method,
            "logged_by": logged_by, "keep": settings["keep"], "episodes": settings["episodes"], "commit": commit}
    oracle = workdir / "reports/evaluate/oracle.json"  # the expert's return: the goal is 90% of it
    base["expert_return"] = json.loads(oracle.read_text())["return_mean"] if oracle.is_file() else None
    ev0 = json.loads((workdir / f"reports/evaluate/{method}.json").read_text())
    out = [{**base, "round": 0, "eval": summary(ev0)}]
    for path in sorted((dest / "rounds").glob("round-*/state.json")):
        state = json.loads(path.read_text())
        if not Rounds.finished(state):
            continue
        returns = state.get("returns") or []
        out.append({**base, "round": state["round"], "eval": summary(state["evaluation"]),
                    "logged_return_mean": sum(returns) / len(returns) if returns else None,
                    "data_episodes": state["data"]["episodes"], "data_transitions": state["data"]["transitions"],
                    "deployed_version": state["deployed"]["version"],
                    "registered_version": state["registered"]["version"],
                    "promoted": state["promotion"]["promoted"], "champion_version": state["promotion"]["champion"]})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="a finished quality-benchmark work dir")
    parser.add_argument("--method", default="redraw", choices=ADAPTED, help="the adapted method (default: redraw)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds after round 0 (default 3)")
    parser.add_argument("--episodes", type=int, default=20, help="stand-in episodes per round (default 20)")
    parser.add_argument("--keep", default="all",
                        help="what each round calibrates on (redraw rounds --keep; default all)")
    parser.add_argument("--base-episodes", type=int, default=0,
                        help="only the first N episodes of the work dir's target data (default 0: all)")
    parser.add_argument("--logged-by", choices=("policy", "expert"), default="policy",
                        help="who acts in the logged episodes: the deployed champion (default) or the expert (the "
                        "control: the same episodes spent on more expert data)")
    parser.add_argument("--jobs", type=int, default=1, help="pipeline stages side by side (default 1)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help=f"records file (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)

    from redraw.experiments.transfer_quality import workdir_commit

    workdir = args.workdir.resolve()
    try:
        check_workdir(workdir, args.method)
        if args.logged_by == "expert" and not (workdir / EXPERT).is_file():
            raise ValueError(f"{workdir / EXPERT}: missing; the control needs the work dir's expert")
    except ValueError as exc:
        parser.error(str(exc))
    dest = rounds_dir(workdir, args.method, args.keep, args.episodes, args.logged_by)
    copy_workdir(workdir, dest, SKIP)
    cfg = RoundsConfig(rounds=args.rounds, episodes=args.episodes, method=args.method, keep=args.keep,
                       base_episodes=args.base_episodes, jobs=args.jobs,
                       expert=str(dest / EXPERT) if args.logged_by == "expert" else "")
    try:
        Rounds(cfg, dest).run()
    finally:  # the rounds that finished are recorded even when a later one failed
        if (dest / "rounds/manifest.json").is_file():
            found = records(workdir, dest, args.method, args.logged_by, workdir_commit(dest))
            merge_keyed(args.results, {"records": (KEY, found)})
            for r in found:
                print(f"{r['pair']} seed {r['seed']} {r['method']} ({r['logged_by']}) round {r['round']}: "
                      f"return {interval(r['eval'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One round of deploy, log, recalibrate: does ReDRAW hold where its policy goes once it has data there?

ReDRAW's corrected model fits the expert's target data but is wrong on the states its own policy
reaches (docs/residual.md, "Measured"), and no ensemble measure taken inside the imagination sees
where (the imagination stays among data-like states). The remedy the measurements point to is data
from where the adapted policy goes: what an engineer gets by deploying the adapted policy on the
robot and logging it. This benchmark runs one such round on a finished quality-benchmark work
directory, at the same target-data budget:

1. deploy METHOD's trained policy on the target simulator for ``--policy-episodes`` episodes (their
   own seed stream, never the test episodes' or the learning curve's) and log them;
2. keep the expert's first episodes so that expert + logged episodes hold as many transitions as
   the expert's data did (``--expert-episodes`` to choose otherwise);
3. calibrate again and train a fresh policy on that data (the pipeline's own stages, the work
   dir's code); evaluate round 0's and round 1's policies on the same ``--eval-episodes`` (100, the
   paper's number) test episodes, with the paired difference.

It works in a copy of the work dir (``WORKDIR-onpolicy-METHOD``; the quality benchmark never
harvests a copy), resumes where it stopped (DVC skips what is done) and merges one record per
(pair, seed, preset, method, episodes) into ``benchmarks/results/onpolicy_round.json``:

    redraw experiment onpolicy_round --workdir WORKDIR --method redraw [--policy-episodes 20]
    redraw experiment onpolicy_round --workdir WORKDIR --method redraw --collect-only

``--logged-by expert`` is the control: the same budget and stages, but the logged episodes are new
ones of the expert's, so a difference from round 0 there is the pipeline's own spread (other
episodes, other random draws), not data from where the policy goes.

This goes beyond the paper, whose target data are fixed before adaptation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from redraw.experiments.provenance import ROOT
from redraw.results_records import merge_keyed
from redraw.rounds import check_workdir, copy_workdir  # noqa: F401 - this experiment's work dirs, as the rounds'

RESULTS = ROOT / "benchmarks/results/onpolicy_round.json"
#: the logged episodes' seed stream: apart from the data sets' (0-2), the final evaluation's (4242)
#: and the learning curve's (4343)
STREAM = 4444
KEY = ("pair", "seed", "preset", "method", "logged_by", "expert_episodes", "policy_episodes")
#: who acts in the logged episodes -> (the checkpoint in the work dir, the name of the copy and its data)
LOGGERS = {"policy": ("models/round0/{method}/agent.pt", "onpolicy"), "expert": ("models/oracle/agent.pt", "expertlog")}
ADAPTED = ("redraw", "redraw_pessimistic", "draw_finetune", "dreamer_finetune")  #: methods that adapt to target data
POLICY_EPISODES = 20  #: logged episodes of a round unless told


def round_dir(workdir: Path, method: str, logged_by: str = "policy", expert_episodes: int | None = None,
              policy_episodes: int = POLICY_EPISODES) -> Path:
    """The round's copy of ``workdir``: ``WORKDIR-onpolicy-METHOD`` (or ``-expertlog-``) for the
    default episode counts (``POLICY_EPISODES`` logged, as many fewer expert ones: ``expert_episodes``
    None), ``...-pP`` or ``...-pP-eE`` for others, so rounds of other sizes never share a copy."""
    name = f"{workdir.name}-{LOGGERS[logged_by][1]}-{method}"
    if expert_episodes is not None or policy_episodes != POLICY_EPISODES:
        name += f"-p{policy_episodes}" + (f"-e{expert_episodes}" if expert_episodes is not None else "")
    return workdir.with_name(name)


def collect_logged(dest: Path, params: dict, method: str, episodes: int, workers: int,
                   logged_by: str = "policy") -> Path:
    """``episodes`` episodes on env.target of METHOD's round-0 policy (kept as models/round0/METHOD)
    or of the expert, in data/onpolicy-METHOD or data/expertlog-METHOD."""
    from redraw.data.behaviours import BehaviourConfig
    from redraw.data.collect import CollectConfig, collect
    from redraw.data.episodes import list_episodes
    from redraw.envs.pair import env_settings

    round0 = dest / f"models/round0/{method}/agent.pt"
    if not round0.is_file():
        round0.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(dest / f"models/policy/{method}/agent.pt", round0)
    ckpt, tag = LOGGERS[logged_by]
    out = dest / f"data/{tag}-{method}"
    if (out / "metadata.json").is_file():
        found = len(list_episodes(out))
        if found != episodes:
            raise ValueError(f"{out}: holds {found} logged episodes, this round asks for {episodes}")
        return out
    policy = dest / ckpt.format(method=method)
    settings = env_settings(params)
    settings["pairs"] = str(dest / (settings["pairs"] or "envs.yaml"))
    collect(CollectConfig(env=params["env"]["target"], out_dir=str(out), episodes=episodes, seed=int(params["seed"]),
                          stream=STREAM, behaviour=BehaviourConfig(kind="policy", checkpoint=str(policy)),
                          workers=workers, **settings))
    return out


def merge_data(dest: Path, method: str, logged: Path, expert_episodes: int, logged_by: str = "policy") -> Path:
    """data/target-LOGGED: the expert's first ``expert_episodes`` episodes, then the logged ones
    (``redraw data merge``; the copy's validate stage checks them), with a behaviour naming both."""
    from redraw.data.episodes import list_episodes
    from redraw.data.importer import merge_datasets
    from redraw.data.schema import read_metadata

    out = dest / f"data/target-{logged.name}"
    if (out / "metadata.json").is_file():
        return out
    expert = read_metadata(dest / "data/target").behaviour
    logged_eps = len(list_episodes(logged))
    merge_datasets([(dest / "data/target", expert_episodes), (logged, None)], out, behaviour=(
        f"{expert} ({expert_episodes} episodes), then policy:{LOGGERS[logged_by][0].format(method=method)} "
        f"({logged_eps} episodes, stream {STREAM})"))
    return out


def set_params(dest: Path, data: Path) -> None:
    """The copy's params point at the merged data, all of it (comments kept)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    path = dest / "params.yaml"
    params = yaml.load(path.read_text())
    params["target_data"] = str(data.relative_to(dest))
    params["target_transitions"] = 0
    with path.open("w") as f:
        yaml.dump(params, f)


def evaluate_both(dest: Path, params: dict, method: str, episodes: int) -> dict:
    """Round 0's and round 1's policies on the first ``episodes`` test episodes (the final evaluation's
    stream: the stage's evaluate.episodes are the first ones here), kept in reports/onpolicy_round/."""
    from redraw.data.collect import policy_returns
    from redraw.envs.pair import env_settings
    from redraw.stats import paired

    out = dest / f"reports/onpolicy_round/{method}-{episodes}.json"
    if out.is_file():
        return json.loads(out.read_text())
    cwd = os.getcwd()
    os.chdir(dest)  # the env-pair file and the checkpoints are the copy's
    try:
        returns = {name: policy_returns(str(path), params["env"]["target"], env_settings(params), episodes,
                                        int(params["seed"]), desc=f"{name} {method}")[0]
                   for name, path in (("round0", f"models/round0/{method}/agent.pt"),
                                      ("round1", f"models/policy/{method}/agent.pt"))}
    finally:
        os.chdir(cwd)
    result = {"episodes": episodes, **paired(returns["round0"], returns["round1"], ("round0", "round1"))}
    for name, values in returns.items():
        result[name]["returns"] = values
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def merge_record(record: dict, path: Path = RESULTS) -> None:
    """Add ``record`` to the results file (the record of the same key is replaced)."""
    merge_keyed(path, {"records": (KEY, [record])})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True,
                        help="a finished quality-benchmark work dir (PRESET-seedN)")
    parser.add_argument("--method", default="redraw", choices=ADAPTED,
                        help="whose policy is deployed and re-adapted (default: redraw)")
    parser.add_argument("--policy-episodes", type=int, default=POLICY_EPISODES,
                        help=f"episodes of the policy logged (default {POLICY_EPISODES}; other counts get a copy of "
                        "their own, WORKDIR-onpolicy-METHOD-pP)")
    parser.add_argument("--expert-episodes", type=int, default=None,
                        help="expert episodes kept (default: as many fewer than the expert's as are logged)")
    parser.add_argument("--jobs", type=int, default=2, help="stages side by side; the cores are split (default 2)")
    parser.add_argument("--eval-episodes", type=int, default=100,
                        help="test episodes both rounds' policies are evaluated on, the same for both (default 100, "
                        "the paper's; the work dir's evaluate stage ran its first evaluate.episodes)")
    parser.add_argument("--logged-by", choices=sorted(LOGGERS), default="policy",
                        help="who acts in the logged episodes: METHOD's round-0 policy (default), or the expert "
                        "(the control: the same budget and pipeline, new episodes of the expert's, no data from "
                        "where the policy goes; in WORKDIR-expertlog-METHOD)")
    parser.add_argument("--collect-only", action="store_true", help="copy, log and merge, train nothing")
    args = parser.parse_args(argv)

    from redraw import scheduler
    from redraw.config import load_params
    from redraw.data.episodes import dataset_stats, list_episodes
    from redraw.experiments.transfer_quality import workdir_commit

    workdir = args.workdir.resolve()
    try:
        check_workdir(workdir, args.method)
    except ValueError as exc:
        parser.error(str(exc))
    if args.policy_episodes < 1 or args.eval_episodes < 2:
        parser.error("--policy-episodes must be at least 1 and --eval-episodes at least 2")
    params = load_params(str(workdir / "params.yaml"))
    n_expert = len(list_episodes(workdir / "data/target"))
    expert_episodes = n_expert - args.policy_episodes if args.expert_episodes is None else args.expert_episodes
    if not 0 <= expert_episodes <= n_expert:
        parser.error(f"--expert-episodes: {expert_episodes} is not within the {n_expert} expert episodes")
    dest = round_dir(workdir, args.method, args.logged_by, args.expert_episodes, args.policy_episodes)
    copy_workdir(workdir, dest)
    logged = collect_logged(dest, params, args.method, args.policy_episodes, args.jobs, args.logged_by)
    data = merge_data(dest, args.method, logged, expert_episodes, args.logged_by)
    set_params(dest, data)
    logged_stats = dataset_stats(logged)
    who = f"{args.method}'s round-0 policy" if args.logged_by == "policy" else "the expert (control)"
    print(f"{who} on the target: {args.policy_episodes} episodes, return mean "
          f"{logged_stats.get('return_mean', float('nan')):.1f}; data {data.relative_to(dest)}", flush=True)
    if args.collect_only:
        return 0
    scheduler.schedule(dest, args.jobs, "logs", [f"evaluate@{args.method}"])
    both = evaluate_both(dest, params, args.method, args.eval_episodes)
    from redraw.stats import RECORDED, interval

    pair = params["env"]["target"]
    merge_record({"pair": pair, "seed": int(params["seed"]), "preset": params.get("preset", "?"),
                  "method": args.method, "logged_by": args.logged_by, "expert_episodes": expert_episodes,
                  "policy_episodes": args.policy_episodes, "logged_return_mean": logged_stats.get("return_mean"),
                  **{k: {m: both[k][m] for m in RECORDED} for k in ("round0", "round1", "difference")},
                  "commit": workdir_commit(dest)})
    r0, r1, d = both["round0"], both["round1"], both["difference"]
    print(f"{pair} seed {params['seed']} {args.method} on {both['episodes']} test episodes: round 0 "
          f"{interval(r0)}, round 1 ({expert_episodes} expert + {args.policy_episodes} episodes logged by the "
          f"{args.logged_by}) {interval(r1)}, difference {interval(d)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Adapt in rounds as a Prefect flow: the loop of ``redraw rounds`` (``redraw.rounds``), each round a
subflow ("round N") and each of its steps a task (deploy, collect, import, merge, track, train,
register, promote), so that the Prefect UI shows where a round is and where it failed.

    python -m flows.rounds --root . --rounds 3 --episodes 20                    # the stand-in robot
    python -m flows.rounds --robot dir:/srv/robot-inbox --timeout 7200 --mapping robot.yaml
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.rounds ...      # against a Prefect server

The flow and ``redraw rounds`` run one implementation and share their state (rounds/ in the
pipeline directory): a loop started from one resumes from the other. A round whose logs fail
validation fails its subflow with the report (also a Prefect artifact) and is not retried: the
logs must be fixed first. Options: ``redraw rounds --help``; docs/rounds.md.
"""

from __future__ import annotations

import argparse
import sys

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from redraw.rounds import RoundRejected, Rounds, RoundsConfig, add_arguments, config_from_args, summary


def _step(name: str, fn):
    """A step of the round as a task of its own (never cached: each run does the step's work or
    finds it done from the round's state)."""
    return task(fn, name=name, task_run_name=name, cache_policy=NO_CACHE, persist_result=False)()


def _round(n: int, fn):
    @flow(name="redraw-round", flow_run_name=f"round {n}", log_prints=True, persist_result=False)
    def one_round(number: int) -> dict:
        try:
            state = fn()
        except RoundRejected as exc:
            create_markdown_artifact(key=f"round-{number}-rejected", description="the data contract's report",
                                     markdown=f"# Round {number}: logs rejected\n\n```\n{exc.report}\n```\n")
            raise
        create_markdown_artifact(key=f"round-{number}", description="what the round did",
                                 markdown=f"# Round {number}\n\n{summary(state)}\n")
        return state

    return one_round(n)


@flow(name="redraw-rounds", log_prints=True, persist_result=False)
def rounds_flow(root: str = ".", settings: dict | None = None) -> list[str]:
    """k rounds in the pipeline directory ``root`` with ``settings`` (``redraw.rounds.RoundsConfig``'s fields)."""
    cfg = RoundsConfig(**(settings or {}))
    states = Rounds(cfg, root).run(round_runner=_round, step_runner=_step)
    lines = [summary(s) for s in states]
    get_run_logger().info("\n".join(lines))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.rounds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="the pipeline directory (default: .)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = {k: v for k, v in vars(config_from_args(args)).items()}
    state = rounds_flow(args.root, settings, return_state=True)
    if state.is_failed():
        try:
            state.result()
        except RoundRejected as exc:
            print(f"rounds: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # noqa: BLE001 - every failure is reported, with its message
            print(f"rounds: error: {exc}", file=sys.stderr)
            return 2
    for line in state.result():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

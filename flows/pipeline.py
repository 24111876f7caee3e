"""The redraw pipeline as a Prefect flow: every DVC stage a task, in the order of dvc.yaml's graph.

DVC keeps owning the stage graph and caching: the order comes from DVC's own graph of
dvc.yaml (never written a second time here), and each task runs ``dvc repro --single-item
STAGE``, which does nothing when the stage is up to date. Prefect adds retries (a stage that
fails for a transient reason is run again; a rejected data set is not), run history, and
artifacts: the results table, the validation verdict and links to the MLflow runs.

    python -m flows.pipeline                     # ephemeral: no server needed
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.pipeline   # against a Prefect server
    python -m flows.pipeline --stages validate_target calibrate@redraw
    python -m flows.pipeline --jobs 2             # independent stages side by side (as `redraw repro`)
    python -m flows.pipeline --serve             # deployment "nightly-recalibrate", cron 0 3 * * *

Served, the flow is a deployment with a cron schedule, visible and triggerable in the Prefect
UI (`make prefect-server` starts server and UI on 127.0.0.1:4200; point PREFECT_API_URL at
it). Nightly it re-runs the pipeline: DVC re-runs validation and everything after it only
when the target data (or anything else a stage depends on) has changed, so new target data
means re-calibration and re-evaluation, and a night without new data costs seconds.

A rejected target data set fails the flow with the failed checks named (file, field, check).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

VALIDATION_STAGE = "validate_target"


class ValidationRejected(RuntimeError):
    """The target data failed its contract: retrying cannot help."""


def stage_order(root: str | Path = ".") -> list[str]:
    """Every DVC stage of ``root``'s dvc.yaml, dependencies first (DVC's own graph)."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        return [stage.name for stage in reversed(list(nx.topological_sort(graph)))]


def _rejection(root: Path) -> str:
    result = json.loads((root / "reports/validation/result.json").read_text())
    failures = result.get("failures", [])
    lines = [f"- {f.get('file')} [{f.get('field')}]: {f.get('check')}: {f.get('message')}" for f in failures[:20]]
    more = f"\n(+{len(failures) - 20} more)" if len(failures) > 20 else ""
    return f"target data {result.get('data_dir')} REJECTED, {len(failures)} failed check(s):\n" + "\n".join(lines) + more


def _retry_unless_rejected(task, task_run, state) -> bool:
    try:
        state.result()
    except ValidationRejected:
        return False
    except Exception:  # noqa: BLE001 - any other failure may be transient
        return True
    return True


@task(task_run_name="{name}", retries=2, retry_delay_seconds=10, retry_condition_fn=_retry_unless_rejected)
def run_stage(name: str, root: str) -> str:
    """``dvc repro --single-item NAME``; its output goes to the task log."""
    logger = get_run_logger()
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", name], cwd=root,
                          capture_output=True, text=True)
    out = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if "INFO mlflow" not in line)
    logger.info(out[-4000:] or f"{name}: up to date")
    if proc.returncode != 0:
        if name == VALIDATION_STAGE and (Path(root) / "reports/validation/result.json").is_file():
            raise ValidationRejected(_rejection(Path(root)))
        raise RuntimeError(f"stage {name} failed (exit {proc.returncode}):\n{out[-2000:]}")
    return "ran" if "Running stage" in proc.stdout else "up to date"


def _artifacts(root: Path) -> None:
    validation = root / "reports/validation/result.json"
    if validation.is_file():
        result = json.loads(validation.read_text())
        verdict = "passed" if result.get("success") else "REJECTED"
        create_markdown_artifact(key="validation", description="target-data contract", markdown=(
            f"# Target data {result.get('data_dir')}: {verdict}\n\n"
            f"fingerprint `{result.get('data_fingerprint')}`; HTML data docs: "
            f"`{root / 'reports/validation/data_docs/index.html'}`\n\n"
            + "\n".join(f"- {name}: {'ok' if ok else 'FAILED'}" for name, ok in sorted(result.get("checks", {}).items()))))
    results = root / "reports/results.md"
    if results.is_file():
        create_markdown_artifact(key="results", description="every method on the target", markdown=results.read_text())
    try:
        import mlflow

        from redraw.tracking import mlflow_setup

        mlflow_setup(root=root)
        runs = mlflow.search_runs(experiment_names=["redraw"], max_results=30, order_by=["start_time DESC"])
        if len(runs):
            ui = "http://127.0.0.1:5000"  # `make ui`; a tracking server's own address when MLFLOW_TRACKING_URI is set
            lines = [f"- [{r['tags.mlflow.runName']}]({ui}/#/experiments/{r['experiment_id']}/runs/{r['run_id']}) "
                     f"{r['status']}" for _, r in runs.iterrows()]
            create_markdown_artifact(key="mlflow-runs", description="the MLflow runs of the stages",
                                     markdown="# MLflow runs (newest first)\n\n" + "\n".join(lines))
    except Exception as exc:  # noqa: BLE001 - links are a convenience; never fail the flow for them
        get_run_logger().warning(f"no MLflow links: {exc}")


@task(task_run_name="{name}", retries=2, retry_delay_seconds=10, retry_condition_fn=_retry_unless_rejected)
def run_stage_command(name: str, cmd: list[str], root: str, threads: int) -> str:
    """A stale stage's dvc.yaml command, run beside others (``dvc commit`` records it)."""
    from redraw.scheduler import venv_env

    proc = subprocess.run(cmd, cwd=root, env=venv_env(OMP_NUM_THREADS=str(threads)), capture_output=True, text=True)
    out = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if "INFO mlflow" not in line)
    get_run_logger().info(out[-4000:] or name)
    if proc.returncode != 0:
        if name == VALIDATION_STAGE and (Path(root) / "reports/validation/result.json").is_file():
            raise ValidationRejected(_rejection(Path(root)))
        raise RuntimeError(f"stage {name} failed (exit {proc.returncode}):\n{out[-2000:]}")
    return "ran"


def _side_by_side(order: list[str], root: str, jobs: int) -> dict[str, str]:
    """The stages of ``order``, each as soon as the stages it needs are done, ``jobs`` at a time
    as concurrent tasks, each recorded in dvc.lock with ``dvc commit`` when it finishes (the
    scheduler of ``redraw repro``)."""
    from prefect.futures import as_completed

    from redraw import scheduler

    root = str(Path(root).resolve())  # the scheduler's DVC calls chdir the process while tasks start stages

    def launch(name: str, cmd: list[str], threads: int):
        return run_stage_command.submit(name, cmd, root, threads)

    ran = scheduler.schedule(root, jobs, "logs", targets=order, launch=launch,
                            first_done=lambda futures: [next(as_completed(futures))])
    return {name: "ran" if name in ran else "up to date" for name in order}


@flow(name="redraw-pipeline", log_prints=True)
def pipeline(root: str = ".", stages: list[str] | None = None, jobs: int = 1) -> dict[str, str]:
    """Run the DVC pipeline at ``root`` stage by stage (all stages, or ``stages`` and what they
    need); with ``jobs`` > 1 each stage starts as soon as the stages it needs are done, ``jobs`` at a time."""
    order = stage_order(root)
    if stages:
        unknown = sorted(set(stages) - set(order))
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; dvc.yaml has {', '.join(order)}")
        from dvc.repo import Repo

        with Repo(root) as repo:
            graph = repo.index.graph
            wanted = set()
            for stage in graph.nodes:
                if stage.name in stages:
                    import networkx as nx

                    wanted |= {s.name for s in nx.descendants(graph, stage)} | {stage.name}
        order = [s for s in order if s in wanted]
    done = {}
    try:
        if jobs > 1:
            done = _side_by_side(order, root, jobs)
        else:
            for name in order:
                done[name] = run_stage(name, root)
    finally:
        _artifacts(Path(root))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="the repository (default: .)")
    parser.add_argument("--stages", nargs="+", default=None, help="only these stages and what they depend on")
    parser.add_argument("--serve", action="store_true",
                        help="serve as a scheduled deployment (needs PREFECT_API_URL: a Prefect server) until Ctrl-C")
    parser.add_argument("--name", default="nightly-recalibrate", help="--serve: deployment name")
    parser.add_argument("--cron", default="0 3 * * *", help="--serve: schedule (default: 03:00 every night)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="independent stages run side by side, this many at a time (default: 1, one by one)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.serve:
        pipeline.serve(name=args.name, cron=args.cron, parameters={"root": str(Path(args.root).resolve()),
                                                                   "stages": args.stages, "jobs": args.jobs},
                       description="re-run the redraw pipeline; DVC re-runs only what new target data changes",
                       tags=["redraw"])
        return 0
    runner = pipeline
    if args.jobs > 1:
        from prefect.task_runners import ThreadPoolTaskRunner

        runner = pipeline.with_options(task_runner=ThreadPoolTaskRunner(max_workers=args.jobs))
    state = runner(args.root, args.stages, args.jobs, return_state=True)
    if state.is_failed():
        print(f"pipeline failed: {state.message}", file=sys.stderr)
        try:
            state.result()
        except Exception as exc:  # noqa: BLE001
            print(str(exc), file=sys.stderr)
        return 1
    for name, what in state.result().items():
        print(f"{name}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

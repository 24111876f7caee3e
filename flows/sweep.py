"""Sweeps on a Prefect work pool: env pairs x methods x seeds x target-data sizes, each point an
isolated DVC experiment, results in a shared MLflow server and a DVC remote.

    make prefect-server                      # Prefect server + UI on 127.0.0.1:4200
    make mlflow-server                       # MLflow tracking server on 127.0.0.1:5000
    export PREFECT_API_URL=http://127.0.0.1:4200/api MLFLOW_TRACKING_URI=http://127.0.0.1:5000
    make sweep-worker  (twice, or on other machines)   # prefect worker start --pool redraw-sweep
    python -m flows.sweep flows/sweeps/smoke.yaml --dvc-remote /srv/redraw-dvc

How a point runs, on whichever worker takes it (``sweep_point``): clone the repository at the
sweep's commit into a fresh directory, apply the preset and the point's params to params.yaml,
``dvc exp run --name <point> evaluate@<method>`` there (DVC decides what to run; stages that
another point already ran with the same inputs come back from the run-cache), push the
experiment to the repository (``refs/exps``) and its outputs and run-cache to the DVC remote,
and record one MLflow "sweep point" run with the evaluation's numbers. Every stage's own MLflow
run carries the point's tags. The trainings keep their checkpoints in one directory per machine
(``<workspace>/checkpoints``), so the points of one pair and seed share them and a retried point
resumes them (``_point_env``).

Nothing is lost or counted twice when a worker dies: the sweep (``sweep``) watches each point's
flow run; a run whose heartbeats stop is marked Crashed by a Prefect automation and the point is
submitted again (``retries`` in the sweep file), to any live worker. The new attempt marks the
dead attempt's MLflow runs KILLED, restores what the dead attempt finished from the run-cache,
and records the point only if no finished record exists; the record names the attempt
(``redraw.sweep_attempt``) whose stage runs made it. A DVC experiment carries the point's params
and dvc.lock (the outputs' hashes, fetchable from the DVC remote); its numbers live in MLflow,
as reports/ is not in git. A bad sweep file is refused before
anything is scheduled, naming the entry. Results: ``reports/sweeps/<name>/`` (JSON, markdown
table, return-vs-data plot) and a Prefect artifact.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

POOL = "redraw-sweep"
POINT_FLOW = "redraw-sweep-point"
DEPLOYMENT = "point"
SWEEP_EXPERIMENT = "redraw-sweeps"  #: MLflow experiment of the one-per-point summary runs
ZOMBIE_AUTOMATION = "redraw: crash flow runs whose heartbeats stopped"


def _sh(cmd: list[str], cwd: str | Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        out = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if "INFO mlflow" not in line)
        raise RuntimeError(f"`{' '.join(cmd)}` failed in {cwd} (exit {proc.returncode}):\n{out[-3000:]}")
    return proc


RECORDS_ARTIFACT = "records.json"  #: a point's results records, on its MLflow record run
CLONE_ARTIFACT = "bc_reference.json"  #: a point's cloned-reference records (sweep file's clone_steps)
CLONE_NEEDS = ("models/pretrain/agent.pt", "data/target/metadata.json")  #: what a point needs to clone


def _stage_env(workdir: Path, tracking_uri: str, tags: dict[str, str]) -> dict[str, str]:
    """The environment the DVC stages of a point run in: this worker's Python (its virtual
    environment), the commit's own code first on the path, the shared MLflow server, the tags."""
    env = dict(os.environ)
    if sys.prefix != sys.base_prefix:  # scripts/py runs the stages with $VIRTUAL_ENV's python
        env["VIRTUAL_ENV"] = sys.prefix
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(workdir / "src")
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["REDRAW_RUN_TAGS"] = json.dumps(tags)
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def _point_env(workspace: str | Path, workdir: Path, tracking_uri: str, tags: dict[str, str]) -> dict[str, str]:
    """``_stage_env`` plus the machine's one checkpoint directory: a training's checkpoints are
    named by everything that shapes it, so the points of one pair and seed share their trainings
    (one trains, the others wait for its lock and then load the finished run) and a point retried
    after a crash resumes them from their last checkpoint instead of from the start."""
    from redraw.checkpoint import CHECKPOINTS_ENV

    env = _stage_env(workdir, tracking_uri, tags)
    env[CHECKPOINTS_ENV] = str(Path(workspace).resolve() / "checkpoints")
    return env


def _point_tags(point, commit: str) -> dict[str, str]:
    return {"redraw.sweep": point.sweep, "redraw.sweep_point": point.name, "redraw.sweep_commit": commit,
            "method": point.method, "env.source": point.source, "env.target": point.target,
            "seed": str(point.seed), "target_transitions": str(point.size)}


def _client(tracking_uri: str):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient()


def _point_runs(client, name: str, commit: str, status: str | None = None, kind: str | None = None):
    """The MLflow runs of a point (stage runs and its record, ``kind="sweep_point"``)."""
    from mlflow.entities import ViewType

    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    query = f"tags.`redraw.sweep_point` = '{name}' and tags.`redraw.sweep_commit` = '{commit}'"
    if status:
        query += f" and attributes.status = '{status}'"
    if kind:
        query += f" and tags.`redraw.kind` = '{kind}'"
    return client.search_runs(experiments, filter_string=query, max_results=1000) if experiments else []


def clone_reference(workdir: Path, steps: int, env: dict | None = None) -> list[dict]:
    """The target data's actions cloned without a world model (``redraw experiment bc_reference``,
    ``steps`` gradient steps) and paired with the methods the point evaluated: its records, or []
    where the point has no target data or no source pretraining (no_adapt, the oracle,
    dreamer_finetune). It runs as ``python -m redraw.experiments.bc_reference``: with the point's
    ``env`` (``_stage_env``: ``PYTHONPATH`` its own ``src``) the point's own checkout's code."""
    missing = [rel for rel in CLONE_NEEDS if not (workdir / rel).exists()]
    if missing:
        print(f"{workdir.name}: no cloned reference here (no {missing[0]})")
        return []
    out = workdir / "reports" / "bc_reference_records.json"
    _sh([sys.executable, "-m", "redraw.experiments.bc_reference", "--workdir", str(workdir),
         "--steps", str(steps), "--results", str(out)], workdir, env)
    return json.loads(out.read_text())["records"]


@flow(name=POINT_FLOW, log_prints=True, retries=1, retry_delay_seconds=10)
def sweep_point(point: dict, repo: str, commit: str, tracking_uri: str, workspace: str,
                dvc_remote: str | None = None) -> dict:
    """Run one sweep point as a DVC experiment in a fresh clone; returns its evaluation."""
    from prefect.runtime import flow_run

    from redraw.config import apply_preset, set_params
    from redraw.sweep_file import Point

    p = Point(**point)
    log = get_run_logger()
    client = _client(tracking_uri)
    done = _point_runs(client, p.name, commit, "FINISHED", kind="sweep_point")
    if done:  # an earlier attempt finished and recorded it: never record a point twice
        log.info(f"{p.name}: already recorded in MLflow (run {done[0].info.run_id}); nothing to do")
        return {"point": p.name, **{k: v for k, v in done[0].data.metrics.items()}}
    for stale in _point_runs(client, p.name, commit, "RUNNING"):  # runs of an attempt that died
        client.set_terminated(stale.info.run_id, "KILLED")
        log.info(f"{p.name}: marked run {stale.info.run_id} of a dead attempt KILLED")

    workdir = Path(workspace) / f"{p.name}-{str(flow_run.get_id() or os.getpid())[:8]}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.parent.mkdir(parents=True, exist_ok=True)
    _sh(["git", "clone", "--quiet", "--no-checkout", repo, str(workdir)], workdir.parent)
    _sh(["git", "checkout", "--quiet", commit], workdir)
    dvc = [sys.executable, "-m", "dvc"]
    attempt = str(flow_run.get_id())
    env = _point_env(workspace, workdir, tracking_uri, {**_point_tags(p, commit), "redraw.sweep_attempt": attempt})
    # one DVC cache per machine: points that share stages (same pair and seed) reuse them
    _sh([*dvc, "cache", "dir", "--local", str(Path(workspace).resolve() / "dvc-cache")], workdir, env)
    if dvc_remote:
        _sh([*dvc, "remote", "add", "--local", "--force", "--default", "sweep", dvc_remote], workdir, env)
    if p.preset:
        apply_preset(p.preset, workdir / "params.yaml", root=workdir)
    set_params(p.overrides, workdir / "params.yaml", source=f"sweep {p.sweep}")
    log.info(f"{p.name}: dvc exp run evaluate@{p.method} in {workdir}")
    # stages that ran before with the same inputs (other points, or a dead attempt that got as
    # far as pushing) come back from the run-cache instead of running again
    _sh([*dvc, "exp", "run", "--name", p.name, *(["--pull"] if dvc_remote else []), f"evaluate@{p.method}"],
        workdir, env)
    # the name is unique to this configuration and commit: replacing it replaces a dead
    # attempt's copy of the same experiment, never another point's
    _sh([*dvc, "exp", "push", "--force", "origin", p.name, *(["--run-cache"] if dvc_remote else ["--no-cache"])],
        workdir, env)
    cloned = clone_reference(workdir, p.clone_steps, env) if p.clone_steps else []
    result = json.loads((workdir / "reports" / "evaluate" / f"{p.method}.json").read_text())
    metrics = {k: float(v) for k, v in result.items() if isinstance(v, (int, float))}
    import mlflow

    experiment = mlflow.set_experiment(SWEEP_EXPERIMENT).experiment_id
    run = client.create_run(experiment, run_name=p.name, tags={
        **_point_tags(p, commit), "redraw.kind": "sweep_point", "dvc.experiment": p.name,
        "redraw.sweep_attempt": attempt})
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.log_param(run.info.run_id, "params", json.dumps(p.overrides, sort_keys=True)[:500])
    # the point in the results-record format `redraw report` reads (its trainings' curves beside)
    from redraw.results_records import workdir_records

    records, trainings = workdir_records(workdir, commit[:10], methods=(p.method,))
    client.log_text(run.info.run_id, json.dumps({"records": records, "trainings": trainings}), RECORDS_ARTIFACT)
    if cloned:
        client.log_text(run.info.run_id, json.dumps({"records": cloned}), CLONE_ARTIFACT)
    client.set_terminated(run.info.run_id, "FINISHED")
    shutil.rmtree(workdir, ignore_errors=True)
    log.info(f"{p.name}: return {metrics.get('return_mean', float('nan')):.1f}")
    return {"point": p.name, **metrics}


# -- the sweep: submit, watch, resubmit what crashed, summarise -------------------------------------

def ensure_pool_and_deployment(pool: str, code_source: str) -> None:
    """The work pool (process workers) and the point flow deployed to it from ``code_source``
    (this checkout, or a git URL that workers elsewhere can clone)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            except ObjectAlreadyExists:
                pass  # a worker started on the same pool created it meanwhile (`prefect worker start` does)
    sweep_point.from_source(source=code_source, entrypoint="flows/sweep.py:sweep_point").deploy(
        name=DEPLOYMENT, work_pool_name=pool, build=False, push=False, print_next_steps=False,
        description="one redraw sweep point: a DVC experiment in a fresh clone", tags=["redraw"])


def ensure_zombie_automation(after_seconds: int) -> None:
    """Prefect's documented zombie detection: a running flow run with no heartbeat for
    ``after_seconds`` is marked Crashed (workers emit heartbeats every
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds, which must be shorter)."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        old = Automation.read(name=ZOMBIE_AUTOMATION)
    except ValueError:
        old = None
    if old is not None:
        if old.trigger.within == timedelta(seconds=after_seconds):
            return
        old.delete()
    Automation(
        name=ZOMBIE_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.Running", "prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=after_seconds)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {after_seconds} s: its worker died")],
    ).create()


def _git(root: Path, *args: str) -> str:
    return _sh(["git", *args], root).stdout.strip()


def summarise_sweep(name: str, commit: str, tracking_uri: str, out_dir: Path) -> list[dict]:
    """One row per point from MLflow (exactly one finished record per point), the mean over
    seeds with a 95% t interval per (pair, method, size), a markdown table and a plot."""
    import mlflow

    client = _client(tracking_uri)
    experiment = mlflow.get_experiment_by_name(SWEEP_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=5000, filter_string=(
        f"tags.`redraw.sweep` = '{name}' and tags.`redraw.sweep_commit` = '{commit}' "
        "and tags.`redraw.kind` = 'sweep_point' and attributes.status = 'FINISHED'")) if experiment else []
    rows = [{"point": r.data.tags["redraw.sweep_point"], "source": r.data.tags["env.source"],
             "target": r.data.tags["env.target"], "method": r.data.tags["method"],
             "seed": int(r.data.tags["seed"]), "size": int(r.data.tags["target_transitions"]),
             "return_mean": r.data.metrics.get("return_mean"), "run_id": r.info.run_id} for r in runs]
    rows.sort(key=lambda r: (r["source"], r["method"], r["size"], r["seed"]))
    from redraw.plots import data_efficiency
    from redraw.stats import summarise
    from redraw.tracking import write_json

    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["source"], r["target"], r["method"], r["size"]), []).append(r["return_mean"])
    table = []
    for (source, target, method, size), returns in groups.items():
        s = summarise(returns)
        table.append({"source": source, "target": target, "method": method, "size": size, "seeds": len(returns),
                      "mean": s["return_mean"], "ci_low": s["return_ci_low"], "ci_high": s["return_ci_high"]})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "points.json", rows)
    # every point's records in one results file, and the report `redraw report` makes of it
    from mlflow.artifacts import load_text

    from redraw.results_records import CLONE_KEY, merge_keyed, merge_results
    from redraw.results_report import build_report

    records_file = out_dir / "transfer_quality.json"
    clone_file = out_dir / "bc_reference.json"  # beside it: the report's cloned-reference section
    records_file.unlink(missing_ok=True)
    clone_file.unlink(missing_ok=True)
    found = 0
    for r in runs:
        uri = r.info.artifact_uri.rstrip("/")
        try:
            blob = json.loads(load_text(f"{uri}/{RECORDS_ARTIFACT}"))
        except Exception as exc:  # a point recorded by an older commit's flow: no records artifact
            print(f"{r.data.tags['redraw.sweep_point']}: no {RECORDS_ARTIFACT} on its record run ({exc})")
            continue
        merge_results(records_file, blob["records"], blob["trainings"])
        found += 1
        if CLONE_ARTIFACT in {a.path for a in client.list_artifacts(r.info.run_id)}:
            merge_keyed(clone_file, {"records": (CLONE_KEY, json.loads(load_text(f"{uri}/{CLONE_ARTIFACT}"))["records"])})
    if found:
        build_report(records_file, out_dir / "report.md", out_dir / "report_figures",
                     command=f"redraw report --results {records_file} --out {out_dir / 'report.md'}")
    write_json(out_dir / "results.json", table)
    lines = ["| source -> target | method | target transitions | seeds | return (mean, 95% CI over seeds) |",
             "|---|---|---|---|---|"]
    lines += [f"| {t['source']} -> {t['target']} | {t['method']} | {t['size']} | {t['seeds']} | "
              f"{t['mean']:.1f} [{t['ci_low']:.1f}, {t['ci_high']:.1f}] |" for t in table]
    (out_dir / "results.md").write_text(f"# Sweep {name} at {commit[:10]}\n\n" + "\n".join(lines) + "\n")
    for source in dict.fromkeys(t["source"] for t in table):
        mine = [t for t in table if t["source"] == source]
        data_efficiency(mine, out_dir / f"{source}.png", f"sweep {name}: {source} -> {mine[0]['target']}")
    return rows


@flow(name="redraw-sweep", log_prints=True)
def sweep(file: str, root: str = ".", repo: str | None = None, commit: str | None = None, pool: str = POOL,
          code_source: str | None = None, dvc_remote: str | None = None, workspace: str | None = None,
          tracking_uri: str | None = None, zombie_after: int = 90, poll_seconds: float = 5.0) -> list[dict]:
    """Run every point of the sweep ``file`` on the work pool ``pool``; resubmit crashed points."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from redraw.sweep_file import load_sweep

    log = get_run_logger()
    rootp = Path(root).resolve()
    spec = load_sweep(file, rootp)  # refused here, before anything is scheduled
    if not commit:
        commit = _git(rootp, "rev-parse", "HEAD")
        dirty = _git(rootp, "status", "--porcelain", "--untracked-files=no")
        if dirty:
            log.warning(f"uncommitted changes are not part of the sweep, which runs {commit[:10]}:\n{dirty}")
    repo = repo or str(rootp)
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{(rootp / 'mlruns' / 'mlflow.db').resolve()}"
    workspace = workspace or str(rootp / "sweeps" / "work")
    ensure_pool_and_deployment(pool, code_source or str(rootp))
    ensure_zombie_automation(zombie_after)

    def submit(point, attempt: int):
        params = {"point": point.as_dict(), "repo": repo, "commit": commit, "tracking_uri": tracking_uri,
                  "workspace": workspace, "dvc_remote": dvc_remote}
        run = run_deployment(f"{POINT_FLOW}/{DEPLOYMENT}", parameters=params, timeout=0,
                             flow_run_name=f"{point.name}#{attempt}", tags=["redraw-sweep", spec.name],
                             idempotency_key=f"{spec.name}:{point.name}:{commit}:{attempt}")
        log.info(f"{point.name}: attempt {attempt} submitted (flow run {run.id})")
        return run.id

    pending = {p.name: (p, submit(p, 0), 0) for p in spec.points}
    failed: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        while pending:
            time.sleep(poll_seconds)
            for name, (point, run_id, attempt) in list(pending.items()):
                state = client.read_flow_run(run_id).state
                if state is None or not state.is_final():
                    continue
                del pending[name]
                if state.is_completed():
                    log.info(f"{name}: completed")
                elif state.is_crashed() and attempt < spec.retries:
                    log.warning(f"{name}: attempt {attempt} crashed ({state.message}); submitting again")
                    pending[name] = (point, submit(point, attempt + 1), attempt + 1)
                else:
                    failed[name] = f"{state.type.value}: {state.message}"
    rows = summarise_sweep(spec.name, commit, tracking_uri, rootp / "reports" / "sweeps" / spec.name)
    table = (rootp / "reports" / "sweeps" / spec.name / "results.md").read_text()
    create_markdown_artifact(key=f"sweep-{spec.name}".replace("_", "-").replace(".", "-").lower(), markdown=table,
                             description=f"sweep {spec.name}: {len(rows)} of {len(spec.points)} points")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(spec.points)} point(s) failed:\n" +
                           "\n".join(f"- {k}: {v}" for k, v in failed.items()))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="See docs/sweeps.md for workers on other machines.")
    parser.add_argument("file", help="sweep definition (YAML), e.g. flows/sweeps/smoke.yaml")
    parser.add_argument("--root", default=".", help="the repository (default: .)")
    parser.add_argument("--check", action="store_true", help="only check the file and list its points")
    parser.add_argument("--pool", default=POOL, help=f"Prefect work pool (default: {POOL})")
    parser.add_argument("--repo", default=None,
                        help="git URL the workers clone (default: this repository's path; workers elsewhere need a URL)")
    parser.add_argument("--code-source", default=None,
                        help="where workers load this flow's code from (default: this checkout; a git URL for remote workers)")
    parser.add_argument("--commit", default=None, help="commit to run (default: HEAD; uncommitted changes are not part of a sweep)")
    parser.add_argument("--dvc-remote", default=None,
                        help="DVC remote (directory, s3://, ssh://...) for outputs and run-cache (default: none)")
    parser.add_argument("--workspace", default=None, help="where workers clone points (default: sweeps/work)")
    parser.add_argument("--zombie-after", type=int, default=90,
                        help="seconds without a heartbeat before a point's run counts as crashed (default: 90; "
                             "workers must set PREFECT_FLOWS_HEARTBEAT_FREQUENCY below it, e.g. 30)")
    args = parser.parse_args(argv)
    from redraw.config import ConfigError
    from redraw.sweep_file import load_sweep

    try:
        spec = load_sweep(args.file, args.root)
    except ConfigError as exc:
        print(f"sweep: error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        for p in spec.points:
            print(p.name)
        print(f"{len(spec.points)} point(s)")
        return 0
    if not os.environ.get("PREFECT_API_URL"):
        print("sweep: error: workers need a Prefect server: `make prefect-server`, then "
              "export PREFECT_API_URL=http://127.0.0.1:4200/api", file=sys.stderr)
        return 2
    state = sweep(args.file, args.root, args.repo, args.commit, args.pool, args.code_source, args.dvc_remote,
                  args.workspace, None, args.zombie_after, return_state=True)
    if state.is_failed():
        print(f"sweep failed: {state.message}", file=sys.stderr)
        return 1
    rows = state.result()
    print((Path(args.root) / "reports" / "sweeps" / spec.name / "results.md").read_text())
    print(f"{len(rows)} point(s) recorded in MLflow experiment {SWEEP_EXPERIMENT!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sweeps: bad definitions refused before scheduling; four smoke points on a Prefect work pool
with two local workers, an MLflow server on loopback and a local-directory DVC remote, one
worker killed mid-run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, free_port, http_json, make_repo, sh, wait_for

SMOKE = ROOT / "flows" / "sweeps" / "smoke.yaml"


def check(tmp_path, text):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return sh([sys.executable, "-m", "flows.sweep", str(path), "--check", "--root", str(ROOT)], ROOT, check=False,
              env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})  # nothing may reach it


GOOD = """name: t
pairs: [pendulum-swingup -> pendulum-swingup-reversed]
methods: [redraw, no_adapt]
seeds: [0, 1]
target_transitions: [5000, 10000]
"""


def test_a_worker_creating_the_pool_first_does_not_fail_the_sweep(monkeypatch):
    """Workers started beside the sweep create its work pool too: between the sweep's read (not
    found) and its create, one of them may win; the sweep goes on with that pool."""
    import prefect.client.orchestration as orchestration
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    import flows.sweep as sweep

    class Client:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read_work_pool(self, name):
            raise ObjectNotFound(http_exc=Exception("404"))

        def create_work_pool(self, pool):
            raise ObjectAlreadyExists(http_exc=Exception("409"))

    deployed = []

    class Flow:
        def from_source(self, source, entrypoint):
            return self

        def deploy(self, **kw):
            deployed.append(kw["work_pool_name"])

    monkeypatch.setattr(orchestration, "get_client", lambda sync_client: Client())
    monkeypatch.setattr(sweep, "sweep_point", Flow())
    sweep.ensure_pool_and_deployment("pool-a", "/code")
    assert deployed == ["pool-a"]


def test_a_sweep_expands_to_every_combination_with_unique_experiment_names(tmp_path):
    from redraw.sweep_file import load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text(GOOD + "params:\n  calibrate:\n    updates: 7\n")
    spec = load_sweep(path, ROOT)
    assert len(spec.points) == 8 and len({p.name for p in spec.points}) == 8
    assert {(p.method, p.seed, p.size) for p in spec.points} == {
        (m, s, n) for m in ("redraw", "no_adapt") for s in (0, 1) for n in (5000, 10000)}
    p = spec.points[0]
    assert p.overrides == {"calibrate.updates": 7, "env.source": "pendulum-swingup",
                           "env.target": "pendulum-swingup-reversed", "seed": 0, "target_transitions": 5000}
    proc = check(tmp_path, GOOD)
    assert proc.returncode == 0 and "8 point(s)" in proc.stdout
    assert p.clone_steps == 0  # no cloned reference unless the file asks for one
    path.write_text(GOOD)
    plain = load_sweep(path, ROOT).points
    path.write_text(GOOD + "clone_steps: 300\n")
    cloned = load_sweep(path, ROOT).points
    assert {q.clone_steps for q in cloned} == {300} and [q.name for q in cloned] == [q.name for q in plain]


@pytest.mark.parametrize("text, named", [
    (GOOD.replace("pendulum-swingup-reversed", "pendulum-swingup-upsidedown"), "pendulum-swingup-upsidedown"),
    (GOOD.replace("no_adapt", "magic"), "magic"),
    (GOOD + "params:\n  calibrate.updatez: 3\n", "calibrate.updatez"),
    (GOOD + "params:\n  seed: 3\n", "seed"),
    (GOOD + "preset: huge\n", "huge"),
    (GOOD + "colour: blue\n", "colour"),
    (GOOD.replace("seeds: [0, 1]", "seeds: [0, zero]"), "zero"),
    (GOOD.replace("[5000, 10000]", "[5000, 99999999]"), "99999999"),
    (GOOD + "clone_steps: -5\n", "clone_steps"),
    (GOOD + "clone_steps: yes\n", "clone_steps"),
])
def test_a_bad_sweep_is_refused_before_anything_is_scheduled_naming_the_entry(tmp_path, text, named):
    proc = check(tmp_path, text)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert named in proc.stderr and "sweep.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_a_prefect_server_the_sweep_says_what_to_start(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(GOOD)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.run([sys.executable, "-m", "flows.sweep", str(path), "--root", str(ROOT)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "make prefect-server" in proc.stderr


def _signal_tree(pid: int, sig: int) -> None:
    """``sig`` to ``pid`` and everything it started (SIGKILL: what a dead machine does to a worker)."""
    import psutil

    proc = psutil.Process(pid)
    for p in [proc, *proc.children(recursive=True)]:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def _running_stage_runs(client, point: str | None = None) -> list:
    """The sweep's stage runs in progress in MLflow (of ``point`` only, if given)."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    only = f" and tags.`redraw.sweep_point` = '{point}'" if point else ""
    return client.search_runs(experiments, filter_string="tags.`redraw.sweep` = 'smoke' and "
                              f"attributes.status = 'RUNNING' and tags.`dvc.stage` != ''{only}") if experiments else []


def _runs_point(pid: int, point: str) -> bool:
    """Whether one of ``pid``'s descendants is a stage of ``point`` (stages carry its tags)."""
    import psutil

    for child in psutil.Process(pid).children(recursive=True):
        try:
            if point in child.environ().get("REDRAW_RUN_TAGS", ""):
                return True
        except psutil.Error:
            pass
    return False


def _mid_run(client, workers):
    """(worker, point) once some point has a stage run in progress in MLflow."""
    for run in _running_stage_runs(client):
        point = run.data.tags["redraw.sweep_point"]
        for name, proc in workers.items():
            if proc.poll() is None and _runs_point(proc.pid, point):
                return name, point
    return None


def _logs(tmp_path, chars=3000):
    """The tails of the sweep's and the workers' logs, for a failure message."""
    parts = []
    for name in ("sweep", "worker1", "worker2"):
        path = tmp_path / f"{name}.log"
        text = path.read_text(errors="replace")[-chars:] if path.is_file() else "(no log)"
        parts.append(f"--- {name}.log (tail) ---\n{text}")
    return "\n".join(parts)


@pytest.mark.slow
def test_four_points_on_two_workers_survive_a_killed_worker(tmp_path):
    import mlflow

    repo = make_repo(tmp_path / "repo", commit=True)
    points = sh([sys.executable, "-m", "flows.sweep", str(SMOKE), "--check", "--root", str(repo)], repo).stdout
    names = [line for line in points.splitlines() if line.startswith("smoke-")]
    assert len(names) == 4
    prefect_port, mlflow_port = free_port(), free_port()
    api, tracking = f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{mlflow_port}"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_API_URL=api, MLFLOW_TRACKING_URI=tracking,
               PREFECT_FLOWS_HEARTBEAT_FREQUENCY="30", PYTHONPATH=str(repo), VIRTUAL_ENV=sys.prefix,
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    procs = {}

    def start(name, cmd):
        log = open(tmp_path / f"{name}.log", "w")
        procs[name] = subprocess.Popen(cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)

    try:
        start("prefect", [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                          "--port", str(prefect_port)])
        start("mlflow", [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                         "--artifacts-destination", str(tmp_path / "mlartifacts")])
        wait_for("the Prefect server", lambda: http_json(api + "/health"))
        wait_for("the MLflow server", lambda: __import__("urllib.request").request.urlopen(tracking + "/health"))
        for i in (1, 2):
            start(f"worker{i}", [sys.executable, "-m", "prefect", "worker", "start", "--pool", "redraw-sweep",
                                 "--type", "process", "--limit", "1", "--name", f"worker{i}"])
        start("sweep", [sys.executable, "-m", "flows.sweep", str(SMOKE), "--root", str(repo), "--dvc-remote",
                        str(tmp_path / "dvc-remote"), "--workspace", str(tmp_path / "work"), "--zombie-after", "60"])
        # kill a worker while its point is mid-run (a stage of it is running and logging to MLflow)
        mlflow.set_tracking_uri(tracking)
        client = mlflow.MlflowClient()
        workers = {n: procs[n] for n in ("worker1", "worker2")}

        def mid_run():
            # a sweep or worker that died cannot produce a point mid-run: say so now, with its log
            for name in ("sweep", "worker1", "worker2", "prefect", "mlflow"):
                assert procs[name].poll() is None, f"{name} exited early (exit code {procs[name].returncode})"
            found = _mid_run(client, workers)
            if not found:
                return None
            # freeze the worker's process tree, then make sure the stage is still running: a stage
            # that ended between the look and the kill would leave the dead attempt nothing to mark
            _signal_tree(procs[found[0]].pid, signal.SIGSTOP)
            time.sleep(0.5)  # requests sent before the freeze land first
            if _running_stage_runs(client, found[1]):
                return found
            _signal_tree(procs[found[0]].pid, signal.SIGCONT)
            return None

        try:  # a busy machine (CI beside other work) makes every stage slower: a generous window
            victim, point = wait_for("a point mid-run", mid_run, seconds=900, every=1.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_logs(tmp_path)}") from None
        _signal_tree(procs[victim].pid, signal.SIGKILL)
        procs[victim].wait(timeout=30)
        assert procs["sweep"].wait(timeout=1500) == 0, _logs(tmp_path)

        # every point is in MLflow exactly once, finished
        experiment = client.get_experiment_by_name("redraw-sweeps").experiment_id
        records = client.search_runs([experiment], filter_string="tags.`redraw.kind` = 'sweep_point'")
        assert sorted(r.data.tags["redraw.sweep_point"] for r in records) == sorted(names)
        assert all(r.info.status == "FINISHED" and "return_mean" in r.data.metrics for r in records)
        # the dead attempt left nothing running; its stages' runs are marked KILLED
        everything = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                        filter_string="tags.`redraw.sweep` = 'smoke'", max_results=1000)
        assert not [r for r in everything if r.info.status == "RUNNING"]
        killed = [r for r in everything if r.info.status == "KILLED"]
        assert killed and {r.data.tags["redraw.sweep_point"] for r in killed} == {point}
        # the killed point was run again, by Prefect, after its run was marked Crashed
        runs = http_json(api + "/flow_runs/filter", {"limit": 50})
        point_runs = [r for r in runs if r["name"].startswith("smoke-")]
        assert [r for r in point_runs if r["state"]["type"] == "CRASHED"]
        assert len([r for r in point_runs if r["state"]["type"] == "COMPLETED"]) == 4
        # each point is one DVC experiment in the repository, its outputs in the DVC remote
        refs = sh(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).stdout.split()
        assert sorted(r.rsplit("/", 1)[1] for r in refs if not r.endswith(("/exec/EXEC_BASELINE"))) == sorted(names)
        assert any((tmp_path / "dvc-remote").rglob("*"))
        # the points (one pair and seed) trained their source pretraining once, in the machine's
        # checkpoint directory, the killed attempt's included
        assert len(list((tmp_path / "work/checkpoints").glob("pretrain-*/checkpoint.pt"))) == 1
        assert not list((tmp_path / "work").glob("smoke-*/checkpoints"))
        assert list((tmp_path / "mlartifacts").rglob("*.png"))  # stage figures, through the server
        table = json.loads((repo / "reports/sweeps/smoke/points.json").read_text())
        assert sorted(row["point"] for row in table) == sorted(names)
        assert (repo / "reports/sweeps/smoke/pendulum-swingup.png").stat().st_size > 0
        # the points as results records, and the report `redraw report` builds from them
        from redraw.results_report import load_results

        records, _ = load_results(repo / "reports/sweeps/smoke/transfer_quality.json")
        assert sorted((r["method"], r["target_transitions"]) for r in records) == [
            ("no_adapt", 100), ("no_adapt", 200), ("redraw", 100), ("redraw", 200)]
        assert {(r["pair"], r["seed"], r["preset"], r["protocol"]) for r in records} == {
            ("pendulum-swingup-reversed", 0, "smoke", "sequential")}
        report = (repo / "reports/sweeps/smoke/report.md").read_text()
        assert "#### pendulum-swingup-reversed" in report
        # the cloned reference (clone_steps): in the points with target data and the source
        # pretraining (redraw's, not no_adapt's), paired with that point's method, in the report
        cloned = json.loads((repo / "reports/sweeps/smoke/bc_reference.json").read_text())["records"]
        assert sorted((r["method"], r["target_transitions"], r["reference"]) for r in cloned) == [
            ("redraw", 100, "bc"), ("redraw", 200, "bc")]
        assert all(r["cloning"]["steps"] == 50 for r in cloned)
        assert "## Behaviour cloning without a world model (a reference)" in report
    finally:
        for name, proc in procs.items():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow  # it needs the smoke pipeline's outputs (smoke_repo)
def test_a_point_clones_the_target_data_only_where_it_has_them(smoke_repo, tmp_path, capsys):
    """A sweep point's cloned reference: bc_reference.py run on the point's work dir, its records
    returned for the point's record run; a point without target data (no_adapt, the oracle) or
    without the source pretraining (dreamer_finetune) has none, and says why."""
    from flows.sweep import clone_reference
    from test_cloning import workdir_copy

    for sub in ("models", "reports", "data"):
        (tmp_path / "w" / sub).mkdir(parents=True)
    work = workdir_copy(smoke_repo.path, tmp_path / "w")
    # the shared smoke repo may hold another test's verdict on other data: validate the copy's own
    sh([sys.executable, "-m", "redraw.stages.validate", "--data", "data/target"], work)
    rows = clone_reference(work, 40)
    evaluated = {p.stem for p in (work / "reports/evaluate").glob("*.json")} - {"source"}
    assert {r["method"] for r in rows} == evaluated and {r["cloning"]["steps"] for r in rows} == {40}
    assert all(r["target_transitions"] == rows[0]["target_transitions"] > 0 for r in rows)
    shutil.rmtree(work / "data/target")
    assert clone_reference(work, 40) == []
    assert "no cloned reference here (no data/target/metadata.json)" in capsys.readouterr().out

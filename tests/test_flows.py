"""The Prefect pipeline flow on the smoke pipeline's repository (ephemeral Prefect, no server)."""

import shutil
import sys

import numpy as np
import pytest

from conftest import free_port, http_json, sh, wait_for

pytestmark = pytest.mark.slow


def flow(repo, tmp_path, *args):
    return sh([sys.executable, "-m", "flows.pipeline", "--root", str(repo), *args], repo, check=False,
              env={"PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(repo)})


def test_the_flow_runs_every_dvc_stage_in_dvc_order(smoke_repo, tmp_path):
    from flows.pipeline import stage_order

    order = stage_order(smoke_repo.path)
    assert order.index("collect_source") < order.index("pretrain") < order.index("calibrate@redraw")
    assert order.index("oracle") < order.index("collect_target")  # the expert behind the target data
    assert order.index("calibrate@redraw") < order.index("train_policy@redraw") < order.index("evaluate@redraw")
    proc = flow(smoke_repo.path, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line and "|" not in line)
    assert set(order) <= set(lines) and set(lines[s] for s in order) == {"up to date"}
    assert "Finished in state Completed" in proc.stdout + proc.stderr


def test_with_jobs_the_flow_runs_the_stale_stages_side_by_side_and_records_them(smoke_repo, tmp_path):
    repo = smoke_repo.path
    for name in ("source", "no_adapt"):  # two independent stages of one level, made stale
        (repo / f"reports/evaluate/{name}.json").unlink()
    proc = flow(repo, tmp_path, "--jobs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line and "|" not in line)
    assert lines["evaluate@source"] == "ran" and lines["evaluate@no_adapt"] == "ran"
    assert lines["pretrain"] == "up to date"  # nothing upstream ran again
    status = sh([sys.executable, "-m", "dvc", "status"], repo)
    assert "changed" not in status.stdout and "deleted" not in status.stdout, status.stdout


def test_rejected_target_data_fails_the_flow_naming_the_checks(smoke_repo, tmp_path):
    repo = smoke_repo.path
    bad = repo / "data" / "bad_flow"
    shutil.copytree(repo / "data" / "target", bad)
    victim = sorted(bad.glob("*.npz"))[0]
    with np.load(victim, allow_pickle=False) as npz:
        episode = dict(npz)
    episode["action"][3] = 7.0  # outside the action bounds
    np.savez_compressed(victim, **episode)
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("target_data: data/target", "target_data: data/bad_flow"))
    try:
        proc = flow(repo, tmp_path, "--stages", "validate_target")
        rerun = sh([sys.executable, "-m", "dvc", "repro", "validate_target"], repo, check=False)
    finally:
        (repo / "params.yaml").write_text(params)
        sh([sys.executable, "-m", "dvc", "repro", "validate_target"], repo)  # the good data's verdict again
    assert proc.returncode == 1
    assert "REJECTED" in proc.stderr and victim.name in proc.stderr and "action" in proc.stderr
    assert "AwaitingRetry" not in proc.stdout + proc.stderr  # a rejection is final: no retries
    assert rerun.returncode != 0


def test_served_deployment_has_its_schedule_and_can_be_triggered(smoke_repo, tmp_path):
    """A Prefect server on loopback, the flow served with a cron schedule, one run triggered."""
    import os
    import subprocess
    from pathlib import Path

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_API_URL=api, PYTHONPATH=str(smoke_repo.path),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    served = None

    def call(path, body=None):
        return http_json(api + path, body)

    try:
        wait_for("the Prefect server", lambda: call("/health"))
        served = subprocess.Popen([sys.executable, "-m", "flows.pipeline", "--root", str(smoke_repo.path), "--serve",
                                   "--cron", "0 3 * * *"], cwd=smoke_repo.path, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deployment = wait_for("the deployment", lambda: call("/deployments/name/redraw-pipeline/nightly-recalibrate"))
        crons = [s["schedule"].get("cron") for s in deployment["schedules"]]
        assert crons == ["0 3 * * *"]
        run = call(f"/deployments/{deployment['id']}/create_flow_run", {})
        final = wait_for("the triggered run", lambda: (lambda r: r if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED")
                                                   else None)(call(f"/flow_runs/{run['id']}")), seconds=300)
        assert final["state"]["type"] == "COMPLETED"
    finally:
        for proc in (served, server):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

"""Shared fixtures: one smoke-preset `dvc repro` of the whole pipeline in a scratch repository,
run once per pytest run and used by the pipeline and deployment tests."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TRACKING_ENV = ("MLFLOW_",)
# the flows' Prefect defaults (flows/__init__.py: no usage reports, 60 s for sqlite's lock and 90 s for a temporary server to start on a busy
# machine), also for the Prefect servers the tests start directly
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_DATABASE_TIMEOUT", "60")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
# one torch thread in the test process, as every stage of the CPU presets runs (perf.threads): the
# tests' tensors are small, and with a thread per core each operation waits for a core that any
# other process may hold (a cloning test took 264 s instead of 6 beside one training)
torch.set_num_threads(1)
# every test process (one per pytest-xdist worker) its own Prefect home: the temporary Prefect
# server a flow starts keeps its sqlite database there, and two servers on one database lock each
# other out; nor does the suite write into the user's ~/.prefect
if "PREFECT_HOME" not in os.environ:
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="redraw-tests-prefect-")
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _tracking_env_restored():
    """Each test leaves the MLflow variables of ``os.environ`` as it found them.

    ``mlflow.set_tracking_uri`` and ``mlflow.set_experiment`` also *export* what they set
    (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_ID) so that child processes inherit it: a test that
    points MLflow at its own server would otherwise send every later test's stages to that
    server after it has stopped."""
    before = {k: v for k, v in os.environ.items() if k.startswith(TRACKING_ENV)}
    yield
    for key in [k for k in os.environ if k.startswith(TRACKING_ENV) and k not in before]:
        del os.environ[key]
    os.environ.update(before)


def sh(cmd, cwd, check=True, env=None, timeout=1800):
    base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the repo's own store
    env = dict(base, VIRTUAL_ENV=sys.prefix, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist (``make test``: ``--dist loadgroup``): every test that uses
    ``smoke_repo`` (a whole smoke pipeline, ~2 min to build once per worker) runs in one worker, so
    that it is built once; any other test runs with the rest of its file, in order. A file's tests
    without the smoke pipeline (the killed-worker sweep, the rounds' unit tests) are free to run in
    the other worker meanwhile, which keeps the smoke worker from being the suite's long pole."""
    for item in items:
        smoke = "smoke_repo" in getattr(item, "fixturenames", ())
        item.add_marker(pytest.mark.xdist_group("smoke_repo" if smoke else item.path.name))


class SmokeRepo:
    def __init__(self, path: Path, first_run: str):
        self.path, self.first_run = path, first_run


def make_repo(path: Path, commit: bool = False) -> Path:
    """A scratch git + DVC repository with this project's pipeline, params and code."""
    path.mkdir(parents=True, exist_ok=True)
    for item in ("dvc.yaml", "params.yaml", "envs.yaml", "presets", "scripts", "src", "flows", "benchmarks", "pretrained",
                 ".gitignore", ".dvcignore"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, path / item)
    sh(["git", "init", "-q"], path)
    sh([sys.executable, "-m", "dvc", "init", "-q"], path)
    sh([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], path)
    if commit:
        sh(["git", "add", "-A"], path)
        sh(["git", "-c", "user.name=redraw-test", "-c", "user.email=test@localhost", "commit", "-qm", "test"], path)
    return path


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory) -> SmokeRepo:
    path = make_repo(tmp_path_factory.mktemp("repo"))
    sh([sys.executable, "-m", "redraw.cli", "preset", "smoke"], path)
    first = sh([sys.executable, "-m", "redraw.cli", "repro", "--jobs", "2"], path)  # what `make repro` runs
    return SmokeRepo(path, first.stdout)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, seconds=180, every=2.0):
    """Poll ``check`` until it returns something truthy (connection errors count as not yet)."""
    import time

    deadline = time.time() + seconds
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


RETRYABLE = (429, 502, 503)


def http_json(url, body=None, attempts=6):
    """GET (or POST ``body``) ``url`` and decode the JSON reply.

    A 429/502/503 is retried with backoff, as Prefect's own client does: the server answers 503 for errors
    it marks retryable, such as sqlite being locked while a served flow registers beside the request.
    """
    import json
    import time
    import urllib.error
    import urllib.request

    for attempt in range(attempts):
        req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"},
                                     method="GET" if body is None else "POST")
        try:
            return json.loads(urllib.request.urlopen(req, timeout=10).read() or "null")
        except urllib.error.HTTPError as err:
            if err.code not in RETRYABLE or attempt == attempts - 1:
                raise
            time.sleep(0.5 * 2 ** attempt)

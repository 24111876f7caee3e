"""Writing a stage's metrics: one JSON file per stage that ``dvc metrics show`` reads.

Metric names are hierarchical (``data/transitions``, ``validate/success``) and flat in the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write JSON atomically (temp file + rename): readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def write_metrics(path: str | os.PathLike, metrics: dict[str, Any], prefix: str = "") -> Path:
    return write_json(path, {f"{prefix}{k}": v for k, v in metrics.items()})


# -- MLflow ---------------------------------------------------------------------------------------
MLRUNS = Path("mlruns")
EXPERIMENT = "redraw"


def _git_commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def mlflow_setup(experiment: str = EXPERIMENT, root: str | os.PathLike = "."):
    """Point MLflow at ``MLFLOW_TRACKING_URI`` or, by default, a sqlite store under
    ``<root>/mlruns/`` (``root``: the repository)."""
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlruns = Path(root) / MLRUNS
        mlruns.mkdir(exist_ok=True)
        mlflow.set_tracking_uri(f"sqlite:///{(mlruns / 'mlflow.db').resolve()}")
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=(mlruns / "artifacts").resolve().as_uri())
    mlflow.set_experiment(experiment)
    return mlflow


def pipeline_key(params: dict[str, Any]) -> str:
    """What makes one pipeline run: the commit and the whole params file. Every stage that
    ``dvc repro`` runs with them nests under the same MLflow parent run."""
    import hashlib

    return hashlib.sha256((_git_commit() + json.dumps(params, sort_keys=True, default=str)).encode()).hexdigest()[:16]


def stage_params(stage: str, params: dict[str, Any], dvc_file: str = "dvc.yaml") -> dict[str, Any]:
    """The params.yaml keys the DVC ``stage`` declares (all of them if dvc.yaml does not say),
    flattened, plus the preset."""
    import yaml

    from redraw.config import flatten

    flat = flatten(params)
    try:
        stages = yaml.safe_load(Path(dvc_file).read_text())["stages"]
        spec = stages[stage.split("@")[0]]
        keys = [str(k) for k in spec.get("do", spec).get("params", []) if not isinstance(k, dict)]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return flat
    out = {k: v for k, v in flat.items() if any(k == key or k.startswith(key + ".") for key in keys)}
    out["preset"] = params.get("preset", "")
    return out


def _env_tags() -> dict[str, str]:
    """Tags from ``REDRAW_RUN_TAGS`` (a JSON object): how a sweep marks the runs of its points."""
    raw = os.environ.get("REDRAW_RUN_TAGS")
    if not raw:
        return {}
    try:
        tags = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"REDRAW_RUN_TAGS is not a JSON object: {exc}") from None
    if not isinstance(tags, dict):
        raise ValueError(f"REDRAW_RUN_TAGS must be a JSON object, got {raw[:80]!r}")
    return {str(k): str(v) for k, v in tags.items()}


class Terminated(SystemExit):
    """Raised in a stage's main thread on SIGTERM (a kill, a cancelled flow run), so that its
    cleanup runs and its MLflow run ends KILLED instead of staying RUNNING."""


def _raise_on_sigterm() -> None:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:  # someone else handles it
        return

    def handler(signum, _frame):
        raise Terminated(128 + signum)

    signal.signal(signal.SIGTERM, handler)


class StageRun:
    """An MLflow run for one DVC stage (``stage``: its dvc.yaml name, e.g. ``calibrate@redraw``),
    nested under the pipeline run of the same commit and params. Logs the stage's params and
    tags (git commit, preset, stage params hash, plus ``tags``: data hashes). Tracking problems
    are reported once and never stop training: the stage's own files (metrics JSON,
    checkpoints, figures) are always written. A stage stopped by SIGTERM or Ctrl-C ends its run
    KILLED (exit status 143 on SIGTERM)."""

    def __init__(self, stage: str, params: dict[str, Any], tags: dict[str, str] | None = None):
        self.stage, self.mlflow, self.run, self.parent = stage, None, None, None
        _raise_on_sigterm()
        try:
            import hashlib

            mlflow = mlflow_setup()
            mine = stage_params(stage, params)
            from filelock import FileLock

            Path(".cache").mkdir(exist_ok=True)
            with FileLock(".cache/pipeline-run.lock", timeout=60):  # stages started side by side: one parent run
                self.parent = self._pipeline_parent(mlflow, params)
            self.run = mlflow.start_run(run_name=stage, tags={
                "stage": stage, "dvc.stage": stage, "git_commit": _git_commit(),
                "preset": str(params.get("preset", "")), "mlflow.parentRunId": self.parent,
                "dvc.stage_params_hash": hashlib.sha256(json.dumps(mine, sort_keys=True, default=str).encode()
                                                        ).hexdigest()[:16],
                **_env_tags(), **(tags or {})})
            items = [(k, str(v)[:500]) for k, v in mine.items()]
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i : i + 100]))
            self.mlflow = mlflow
        except Exception as exc:  # noqa: BLE001 - any tracking failure must not cost the run
            self._warn(exc)

    @staticmethod
    def _pipeline_parent(mlflow, params: dict[str, Any]) -> str:
        client = mlflow.MlflowClient()
        experiment = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
        key = pipeline_key(params)
        found = client.search_runs([experiment], filter_string=f"tags.`redraw.pipeline_key` = '{key}'", max_results=1)
        if found:
            return found[0].info.run_id
        commit = _git_commit()
        run = client.create_run(experiment, run_name=f"pipeline {params.get('preset', '')} {commit[:8]}", tags={
            "redraw.pipeline_key": key, "redraw.kind": "pipeline", "git_commit": commit,
            "preset": str(params.get("preset", "")), **_env_tags()})
        from redraw.config import flatten

        from mlflow.entities import Param

        flat = [Param(k, str(v)[:500]) for k, v in flatten(params).items()]
        for i in range(0, len(flat), 100):
            client.log_batch(run.info.run_id, params=flat[i : i + 100])
        return run.info.run_id

    def _warn(self, exc: Exception) -> None:
        import sys

        print(f"{self.stage}: warning: MLflow tracking unavailable ({type(exc).__name__}: {exc}); "
              "local results are still written", file=sys.stderr)
        self.mlflow = None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.mlflow is None:
            return
        try:
            self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    def log_artifacts(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if self.mlflow is None:
            return
        try:
            path = Path(path)
            if path.is_dir():
                self.mlflow.log_artifacts(str(path), artifact_path)
            elif path.is_file():
                self.mlflow.log_artifact(str(path), artifact_path)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    def end(self, status: str = "FINISHED") -> None:
        """End the stage's run; the pipeline run shows the latest stage's outcome. Called while
        a kill or Ctrl-C is being handled, a FAILED run ends KILLED."""
        import sys

        if status == "FAILED" and isinstance(sys.exc_info()[1], (Terminated, KeyboardInterrupt)):
            status = "KILLED"
        if self.mlflow is not None:
            try:
                self.mlflow.end_run(status=status)
                self.mlflow.MlflowClient().set_terminated(self.parent, status)
            except Exception as exc:  # noqa: BLE001
                self._warn(exc)

    def __enter__(self) -> "StageRun":
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.end("FAILED" if exc_type else "FINISHED")  # end() tells a kill from a failure

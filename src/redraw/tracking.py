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


def mlflow_setup(experiment: str = EXPERIMENT):
    """Point MLflow at ``MLFLOW_TRACKING_URI`` or, by default, a sqlite store under ``mlruns/``."""
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        MLRUNS.mkdir(exist_ok=True)
        mlflow.set_tracking_uri(f"sqlite:///{(MLRUNS / 'mlflow.db').resolve()}")
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=(MLRUNS / "artifacts").resolve().as_uri())
    mlflow.set_experiment(experiment)
    return mlflow


class StageRun:
    """An MLflow run for one stage. Tracking problems are reported once and never stop training:
    the stage's own files (metrics JSON, checkpoints, figures) are always written."""

    def __init__(self, stage: str, params: dict[str, Any], tags: dict[str, str] | None = None):
        self.stage, self.mlflow, self.run = stage, None, None
        try:
            from redraw.config import flatten

            mlflow = mlflow_setup()
            self.run = mlflow.start_run(run_name=stage, tags={"stage": stage, "git_commit": _git_commit(),
                                                               "preset": str(params.get("preset", "")), **(tags or {})})
            flat = {k: str(v)[:500] for k, v in flatten(params).items()}
            items = list(flat.items())
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i : i + 100]))
            self.mlflow = mlflow
        except Exception as exc:  # noqa: BLE001 - any tracking failure must not cost the run
            self._warn(exc)

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
        if self.mlflow is not None:
            try:
                self.mlflow.end_run(status=status)
            except Exception as exc:  # noqa: BLE001
                self._warn(exc)

    def __enter__(self) -> "StageRun":
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.end("FAILED" if exc_type else "FINISHED")

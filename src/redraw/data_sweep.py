"""Data-efficiency sweep: every adaptation method at several target-data sizes.

    redraw sweep-data --sizes 5000 10000 20000 40000

For each size N, a work directory ``sweeps/data_efficiency/N/`` gets this project's params
with ``target_transitions: N`` and read-only links to the inputs that do not depend on N
(``data/``, the pretrained models, the validation result); there the stages calibrate,
train_policy and evaluate run for each method, exactly as ``dvc repro`` runs them. No output
of the main pipeline is touched. ``no_adapt`` and ``oracle`` do not use target data: their
evaluations are taken from ``reports/evaluate/`` (``dvc repro`` first). Writes
``reports/data_efficiency.json`` and ``reports/data_efficiency.png`` (return vs data size).
A size whose results exist for the same params is not run again; changed params redo it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

from redraw.config import ConfigError, _yaml, get, load_params
from redraw.methods import calibrated

ROOT = Path("sweeps/data_efficiency")
SHARED = ("data", "models/pretrain", "models/pretrain_rssm", "models/oracle", "reports/validation")
FIXED = ("no_adapt", "oracle")  #: methods that do not use the target data


@contextlib.contextmanager
def _cwd(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _prepare(workdir: Path, params_path: str, size: int) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for item in SHARED:
        src, dst = Path(item).resolve(), workdir / item
        if not src.exists():
            raise FileNotFoundError(f"{item}: missing; run `dvc repro` before the sweep")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(src, target_is_directory=src.is_dir())
    params = load_params(params_path, round_trip=True)
    params["target_transitions"] = size
    buf = io.StringIO()
    _yaml().dump(params, buf)
    old = workdir / "params.yaml"
    if old.is_file() and old.read_text() != buf.getvalue():
        # other params than the results here were made with: they are stale
        for out in ("reports/calibrate", "reports/train_policy", "reports/evaluate", "models/calibrate", "models/policy"):
            shutil.rmtree(workdir / out, ignore_errors=True)
    old.write_text(buf.getvalue())


@contextlib.contextmanager
def _env(key: str, value: str | None):
    old = os.environ.get(key)
    if value is not None:
        os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _run_size(size: int, params_path: str, methods: tuple[str, ...], progress: bool) -> list[dict]:
    from redraw.stages import calibrate, evaluate, train_policy

    workdir = ROOT / str(size)
    _prepare(workdir, params_path, size)
    rows = []
    with _cwd(workdir):
        local = load_params("params.yaml")
        for method in methods:
            done = Path(f"reports/evaluate/{method}.json")
            if not done.is_file():
                calibrate.run(method, local, progress=progress)
                train_policy.run(method, local, progress=progress)
                evaluate.run(method, local, progress=progress)
            ev = json.loads(done.read_text())
            used = json.loads(Path(f"reports/calibrate/{method}.json").read_text())["calib/train_transitions"]
            rows.append({"method": method, "size": size, "transitions_used": used, "mean": ev["return_mean"],
                         "ci_low": ev["return_ci_low"], "ci_high": ev["return_ci_high"]})
    return rows


def sweep(sizes: list[int], params_path: str = "params.yaml", methods: tuple[str, ...] | None = None,
          progress: bool = True) -> dict:
    if not sizes or any(s <= 0 for s in sizes):
        raise ConfigError(f"--sizes must be positive transition counts, got {sizes}")
    methods = calibrated() if methods is None else methods
    for m in methods:
        if m not in calibrated():
            raise ConfigError(f"unknown method {m!r} for the data sweep; choose from {', '.join(calibrated())}")
    params = load_params(params_path)
    rows = []
    # every run lands in this project's MLflow store, not one per work directory
    from redraw.tracking import mlflow_setup

    tracking = os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking:
        try:
            tracking = mlflow_setup().get_tracking_uri()
        except Exception:  # noqa: BLE001 - tracking trouble must not stop the sweep (StageRun warns)
            tracking = None
    with _env("MLFLOW_TRACKING_URI", tracking):
        for size in sorted(sizes):
            rows += _run_size(size, params_path, methods, progress)
    for method in FIXED:
        file = Path(f"reports/evaluate/{method}.json")
        if file.is_file():
            ev = json.loads(file.read_text())
            rows += [{"method": method, "size": s, "transitions_used": 0, "mean": ev["return_mean"],
                      "ci_low": ev["return_ci_low"], "ci_high": ev["return_ci_high"]} for s in sorted(sizes)]
    from redraw.plots import data_efficiency
    from redraw.tracking import write_json

    write_json("reports/data_efficiency.json", rows)
    data_efficiency(rows, "reports/data_efficiency.png",
                    f"{get(params, 'env.source')} -> {get(params, 'env.target')}: return vs target data")
    return {"rows": len(rows)}

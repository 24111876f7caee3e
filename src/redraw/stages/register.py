"""DVC stage ``register``: the evaluated policy becomes a version of the env pair's registered model.

Logs ``register.method``'s policy as an MLflow pyfunc model (plus its ``torch.export`` program),
registers it as a new version of ``<source>-to-<target>`` tagged with the method, its target
return (from ``reports/evaluate/<method>.json``), the target data hash, preset and seed, and
points alias ``challenger`` at it. ``redraw promote`` then applies the gate to ``champion``.

    python -m redraw.stages.register [--params params.yaml]

Writes ``reports/register.json`` (name, version, URIs). Unlike the training stages, this one
needs MLflow: if the tracking or registry server is down it fails with that error, and every
earlier output stays as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from redraw.config import ConfigError, get
from redraw.deploy import CHALLENGER, DeployError, log_policy, register, registered_name
from redraw.envs.pair import env_settings
from redraw.stages import report_run, stage_params
from redraw.stages.evaluate import POLICIES, REPORTS
from redraw.tracking import _git_commit, write_json

RESULT = "reports/register.json"


def run(params: dict, path: str = "params.yaml") -> dict:
    method = get(params, "register.method", path)
    if method not in POLICIES or POLICIES[method][1] != "env.target":
        raise ConfigError(f"{path}: register.method {method!r} is not a target policy "
                          f"(choose from {', '.join(m for m, (_, e) in POLICIES.items() if e == 'env.target')})")
    policy_path, _ = POLICIES[method]
    report = REPORTS / f"{method}.json"
    if not report.is_file():
        raise FileNotFoundError(f"{report}: {method} has not been evaluated; run `dvc repro evaluate@{method}`")
    ev = json.loads(report.read_text())
    from redraw.checkpoint import load_checkpoint

    identity = load_checkpoint(policy_path, map_location="cpu")["identity"]
    source, target = get(params, "env.source", path), get(params, "env.target", path)
    name = registered_name(source, target)
    tags = {"method": method, "target_return": f"{ev['return_mean']:.4f}",
            "target_return_ci95": f"[{ev['return_ci_low']:.4f}, {ev['return_ci_high']:.4f}]",
            "eval_episodes": str(ev["episodes"]), "data_hash": str(identity.get("target_data", "none (no target data)")),
            "env_source": source, "env_target": target, "preset": str(params.get("preset", "")),
            "seed": str(get(params, "seed", path)), "git_commit": _git_commit()}
    from redraw.envs import load_pairs

    env_kwargs = env_settings(params, path)
    # the env-pair file's content travels with the model: deploy rebuilds the same target anywhere
    env_kwargs["pairs"] = load_pairs(env_kwargs["pairs"]).to_mapping()
    metadata = {"env_source": source, "env_target": target, "env_kwargs": env_kwargs, "method": method}
    import mlflow

    from redraw.tracking import StageRun, mlflow_setup, stage_params

    try:
        mlflow_setup()
        parent = StageRun._pipeline_parent(mlflow, params)
        with mlflow.start_run(run_name="register", tags={"stage": "register", "dvc.stage": "register",
                                                         "mlflow.parentRunId": parent, **tags}) as active:
            mlflow.log_params({k: str(v)[:500] for k, v in stage_params("register", params).items()})
            mlflow.log_metric("eval/return_mean", ev["return_mean"])
            uri = log_policy(policy_path, metadata)
        version = register(uri, name, tags, description=f"{method} policy for {target}, trained from {source}")
    except DeployError:
        raise
    except Exception as exc:  # noqa: BLE001 - name the store that failed; local results are untouched
        where = os.environ.get("MLFLOW_TRACKING_URI") or "the local sqlite store under mlruns/"
        raise DeployError(f"MLflow at {where} failed while registering {policy_path}: {type(exc).__name__}: {exc}. "
                          "Nothing else was changed; start the server (or unset MLFLOW_TRACKING_URI) and re-run "
                          "`dvc repro register`") from None
    result = {"name": name, "version": version, "alias": CHALLENGER, "model_uri": uri, "run_id": active.info.run_id,
              "registry_uri": f"models:/{name}@{CHALLENGER}", "method": method, "target_return": ev["return_mean"]}
    write_json(RESULT, result)
    return {"register/version": int(version), "register/target_return": ev["return_mean"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m redraw.stages.register",
                                     description="Register the evaluated policy (register.method) as the env pair's "
                                     "challenger in the MLflow model registry (DVC stage register).")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    code = report_run("register", lambda: run(stage_params(args.params), args.params),
                      (ConfigError, FileNotFoundError, DeployError))
    if code == 0:
        r = json.loads(Path(RESULT).read_text())
        print(f"register: {r['registry_uri']} is v{r['version']}; `redraw promote --name {r['name']}` applies the gate")
    return code


if __name__ == "__main__":
    sys.exit(main())

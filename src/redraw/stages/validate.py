"""DVC stage ``validate_target``: the Great Expectations data contract on the target data.

Writes ``reports/validate_target.json`` (metrics for ``dvc metrics show``),
``reports/validation/result.json`` (every check, every failure, the data fingerprint) and the
HTML data docs under ``reports/validation/data_docs/``. Exits non-zero when any check fails,
so ``dvc repro`` stops before anything trains on rejected data. The data is only read.

    python -m redraw.stages.validate [--params params.yaml] [--data data/target]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from redraw.config import ConfigError, get, section
from redraw.data.episodes import dataset_fingerprint
from redraw.stages import stage_params
from redraw.tracking import StageRun, write_json, write_metrics

DATA_DIR = "data/target"
METRICS = "reports/validate_target.json"
RESULT = "reports/validation/result.json"
DOCS_DIR = "reports/validation/data_docs"


def validation_config(params: dict, params_path: str = "params.yaml", env_key: str = "env.target"):
    """The contract of params' ``validate`` section for the data of env ``env_key``. A reward bound
    that is null there is the env's (``redraw.envs.dmc.reward_bounds``: the env-pair file's
    ``reward_range``, dm_control's [0, 1], a Gymnasium env's ``reward_range``)."""
    from redraw.validation import ValidationConfig

    cfg = section(
        params, "validate", ValidationConfig, params_path,
        expected_env=get(params, env_key, params_path),
        expected_obs_mode=get(params, "env.obs_mode", params_path),
        reward_from="",
    )
    if not cfg.allow_rate_mismatch:
        cfg.expected_control_hz = agent_rate(params, params_path, env_key)
    unset = [key for key in ("reward_min", "reward_max") if getattr(cfg, key) is None]
    for key in {"reward_min", "reward_max"} - set(unset):
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{params_path}: validate.{key}: expected a number, or null for the env's reward "
                              f"range, got {value!r}")
    if not unset:
        cfg.reward_from = f"set in {params_path}"
        return cfg
    lo, hi, origin = env_reward_bounds(params, params_path, env_key)
    cfg.reward_min = lo if cfg.reward_min is None else cfg.reward_min
    cfg.reward_max = hi if cfg.reward_max is None else cfg.reward_max
    cfg.reward_from = f"{' and '.join(unset)} null in {params_path}, so the env's range: {origin}"
    return cfg


def agent_rate(params: dict, params_path: str = "params.yaml", env_key: str = "env.target") -> float | None:
    """Agent steps per second of env ``env_key``: its control timestep times env.action_repeat
    (None where the env is not in the env-pair file)."""
    from redraw.data.importers.convert import env_facts
    from redraw.envs.registry import load_pairs

    env = params.get("env") or {}
    name, repeat = env.get(env_key.split(".", 1)[1]), env.get("action_repeat")
    registry = load_pairs(env.get("pairs") or None)
    if name not in registry.envs or not repeat:
        return None
    _, timestep = env_facts(name, env.get("obs_mode") or "proprio", 64, registry)
    return 1.0 / (timestep * int(repeat))


def env_reward_bounds(params: dict, params_path: str = "params.yaml", env_key: str = "env.target"):
    """``(lo, hi, where)`` of the rewards of env ``env_key`` of the env-pair file ``env.pairs``."""
    from redraw.envs import EnvFileError, load_pairs
    from redraw.envs.dmc import reward_bounds
    from redraw.envs.pair import pairs_of

    env = get(params, env_key, params_path)
    try:
        registry = load_pairs(pairs_of(params))
        if env not in registry.envs:
            raise ConfigError(f"{params_path}: validate.reward_min / validate.reward_max are null (the env's reward "
                              f"range), but {env_key} {env!r} is not an env of {registry.file}; set them")
        return reward_bounds(env, registry)
    except EnvFileError as exc:
        raise ConfigError(str(exc)) from None


def report(result, out=None) -> None:
    """Print a verdict and every failed check with its file and field."""
    out = out or sys.stdout
    stats = result.stats
    if result.success:
        print(
            f"validate: {result.directory}: OK — {stats.get('episodes', 0)} episodes, "
            f"{stats.get('transitions', 0)} transitions, {stats.get('checks_evaluated', 0)} checks passed",
            file=out,
        )
        return
    print(f"validate: {result.directory}: REJECTED — {len(result.failures)} failed check(s):", file=out)
    for failure in result.failures:
        print(f"  - {failure}", file=out)


def run(params: dict, params_path: str = "params.yaml", data_dir: str = DATA_DIR):
    from redraw.validation import validate_dataset

    cfg = validation_config(params, params_path)
    result = validate_dataset(data_dir, cfg, docs_dir=DOCS_DIR)
    payload = result.to_dict()
    payload["data_dir"] = str(data_dir)
    payload["data_fingerprint"] = dataset_fingerprint(data_dir) if Path(data_dir).is_dir() else None
    write_json(RESULT, payload)
    metrics = {"success": int(result.success), "failures": len(result.failures)}
    metrics.update({k: v for k, v in result.stats.items() if isinstance(v, (int, float))})
    write_metrics(METRICS, metrics, prefix="validate/")
    with StageRun("validate_target", params, tags={"data_hash": str(payload["data_fingerprint"]),
                                                   "validation": "passed" if result.success else "REJECTED"}) as run_:
        run_.log_metrics({f"validate/{k}": v for k, v in metrics.items()})
        run_.log_artifacts(RESULT)
        run_.log_artifacts(DOCS_DIR, "data_docs")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m redraw.stages.validate",
        description="Validate the target data set against the data contract (DVC stage).",
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--data", default=DATA_DIR, help=f"data set directory (default: {DATA_DIR})")
    args = parser.parse_args(argv)
    try:
        result = run(stage_params(args.params), args.params, args.data)
    except ConfigError as exc:
        print(f"validate: error: {exc}", file=sys.stderr)
        return 2
    report(result, out=sys.stdout if result.success else sys.stderr)
    print(f"validate: data docs: {DOCS_DIR}/index.html")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())

"""DVC stages ``collect_source`` / ``collect_target`` / ``collect_oracle``: simulator episodes with
a behaviour policy.

The target simulator stands in for the real robot: ``collect_target`` produces the small, fixed
target data set (size in transitions, ``collect_target.transitions``). ``collect_oracle`` is the
oracle's counterpart of ``collect_source``: the same episodes (``collect_source``'s behaviour and
size) in the target simulator, so that the oracle starts its replay as the source pretraining does.

    python -m redraw.stages.collect source|target|oracle [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from redraw.config import ConfigError, get
from redraw.config import section as config_section
from redraw.data.behaviours import BehaviourConfig, make_behaviour
from redraw.data.collect import CollectConfig, collect
from redraw.data.episodes import dataset_fingerprint, dataset_stats
from redraw.envs.pair import env_settings
from redraw.stages import report_run, stage_params
from redraw.tracking import StageRun, write_metrics

OUT_DIRS = {"source": "data/source", "target": "data/target", "oracle": "data/oracle"}
METRICS = {"source": "reports/collect_source.json", "target": "reports/collect_target.json",
           "oracle": "reports/collect_oracle.json"}
STREAMS = {"source": 0, "target": 1, "oracle": 2}
#: which: (env key, params section with the sizes and the behaviour)
SETTINGS = {"source": ("env.source", "collect_source"), "target": ("env.target", "collect_target"),
            "oracle": ("env.target", "collect_source")}


def config_from_params(which: str, params: dict, params_path: str = "params.yaml") -> CollectConfig:
    env_key, name = SETTINGS[which]
    section = get(params, name, params_path)
    behaviour = config_section(params, f"{name}.behaviour", BehaviourConfig, params_path)
    return CollectConfig(
        env=get(params, env_key, params_path),
        out_dir=OUT_DIRS[which],
        episodes=int(section.get("episodes", 0)),
        transitions=int(section.get("transitions", 0)),
        seed=int(get(params, "seed", params_path)),
        stream=STREAMS[which],
        behaviour=behaviour,
        workers=int(get(params, "collect.workers", params_path)),
        **env_settings(params, params_path),
    )


def stage_deps(stage: str, dvc_path: str = "dvc.yaml") -> list[str] | None:
    """The dependency paths of ``stage`` in ``dvc_path`` (None where there is no such file)."""
    from ruamel.yaml import YAML

    if not Path(dvc_path).is_file():
        return None
    stages = (YAML(typ="safe").load(Path(dvc_path).read_text()) or {}).get("stages", {})
    return [str(d) for d in (stages.get(stage) or {}).get("deps", [])]


def check_behaviour(which: str, params: dict, params_path: str = "params.yaml", dvc_path: str = "dvc.yaml") -> None:
    """Refuse a bad ``collect_{which}.behaviour`` naming the file and field. The oracle's stage
    checks the target's before it trains: collect_target waits for it, and would fail only then.
    A policy behind the target data must be a dependency of collect_target in ``dvc_path``: else
    DVC would keep data collected by an older checkpoint."""
    behaviour = config_from_params(which, params, params_path).behaviour
    key = f"{params_path}: {SETTINGS[which][1]}.behaviour"
    try:
        make_behaviour(behaviour, np.zeros(1), np.ones(1))  # the checkpoint itself is loaded when collecting
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    deps = stage_deps("collect_target", dvc_path) if which == "target" and behaviour.kind == "policy" else None
    if deps is not None:
        ckpt = Path(behaviour.checkpoint)
        if not any(ckpt == Path(d) or Path(d) in ckpt.parents for d in deps):
            raise ConfigError(f"{key}.checkpoint: {behaviour.checkpoint} is not under a dependency of stage "
                              f"collect_target in {dvc_path} ({', '.join(deps)}); add it there")


def check_pair(params: dict, params_path: str = "params.yaml") -> None:
    """Check the pair (``redraw.envs.pair``), then build env.source and env.target once, so that a
    bad body, joint or actuator name stops the first stage, not a later one."""
    from redraw.envs import make_env
    from redraw.envs.pair import check_pair as check_names_and_spaces

    check_names_and_spaces(params, params_path)
    settings = env_settings(params, params_path)
    for name in (get(params, "env.source", params_path), get(params, "env.target", params_path)):
        make_env(name, **{**settings, "obs_mode": "proprio"}).close()


def run(which: str, params: dict, params_path: str = "params.yaml", progress: bool = True) -> dict:
    check_behaviour(which, params, params_path)
    cfg = config_from_params(which, params, params_path)
    check_pair(params, params_path)
    collect(cfg, progress=progress)
    metrics = dataset_stats(cfg.out_dir)
    write_metrics(METRICS[which], metrics, prefix="data/")
    tags = {"env": cfg.env, "data_hash": dataset_fingerprint(cfg.out_dir)}
    with StageRun(f"collect_{which}", params, tags=tags) as run_:
        run_.log_metrics({f"data/{k}": v for k, v in metrics.items()})
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m redraw.stages.collect",
        description="Collect simulator episodes for the source or the target env (DVC stages collect_source, "
        "collect_target, collect_oracle).",
    )
    parser.add_argument("which", choices=sorted(OUT_DIRS), help="source: env.source -> data/source; target: env.target -> data/target; oracle: "
                        "env.target with collect_source's behaviour and size -> data/oracle (the oracle's start)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    return report_run(
        f"collect {args.which}",
        lambda: run(args.which, stage_params(args.params), args.params, progress=not args.no_progress),
        (ConfigError, ValueError, FileExistsError, FileNotFoundError, KeyError),
    )

if __name__ == "__main__":
    sys.exit(main())

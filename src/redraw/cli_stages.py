"""``redraw stage NAME``: every DVC stage of dvc.yaml, by its DVC name, from the command line.

Each name maps to the stage module and the fixed arguments its ``cmd`` in dvc.yaml passes
(``tests/test_cli.py`` checks the two agree), and runs that module's own ``main``: the same
code as ``dvc repro`` and ``python -m redraw.stages.X``, outside DVC's bookkeeping (nothing is
recorded in dvc.lock; ``dvc repro`` afterwards re-runs the stage or, with ``dvc commit``, takes
its outputs as they are).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from redraw import methods

#: the adaptation methods of calibrate@ / train_policy@, and the policies of evaluate@ (dvc.yaml's foreach;
#: the registry as it is when this module is imported)
CALIBRATED = methods.calibrated()
EVALUATED = methods.evaluated()


def _stages() -> dict[str, tuple[str, list[str], str]]:
    """DVC stage name -> (module under redraw.stages, fixed arguments, what it does)."""
    table = {
        "collect_source": ("collect", ["source"], "episodes from env.source with collect_source.behaviour -> data/source"),
        "collect_oracle": ("collect", ["oracle"], "collect_source's behaviour and size in env.target -> data/oracle "
                           "(where the oracle's training starts)"),
        "collect_target": ("collect", ["target"], "the target data: collect_target.transitions from env.target "
                           "-> data/target"),
        "validate_target": ("validate", [], "the data contract (Great Expectations) on target_data -> "
                            "reports/validate_target.json, data docs"),
        "pretrain": ("pretrain", [], "DRAW world model + actor-critic trained online in env.source -> models/pretrain"),
        "oracle": ("pretrain", ["--oracle"], "the same training in env.target (the upper bound) -> models/oracle"),
        "pretrain_rssm": ("pretrain", ["--rssm"], "the same pretraining with DreamerV3's RSSM (for dreamer_finetune) "
                          "-> models/pretrain_rssm"),
    }
    for m in methods.calibrated():
        table[f"calibrate@{m}"] = ("calibrate", [m], f"adapt the pretrained world model to the target data ({m}) "
                                   f"-> models/calibrate/{m}, dynamics-gap report")
    for m in methods.calibrated():
        table[f"train_policy@{m}"] = ("train_policy", [m], f"train the target policy in {m}'s calibrated model's "
                                      f"imagination -> models/policy/{m}")
    for m in methods.evaluated():
        table[f"evaluate@{m}"] = ("evaluate", [m], f"evaluate the {m} policy -> reports/evaluate/{m}.json")
    table["results"] = ("evaluate", ["--results"], "every method side by side -> reports/results.{md,json,png}")
    table["register"] = ("register", [], "register register.method's policy as the env pair's MLflow challenger")
    return table


STAGES = _stages()
NO_PROGRESS_FLAG = {"collect", "pretrain", "calibrate", "train_policy", "evaluate"}  #: modules with --no-progress


def stage_argv(name: str, params: str = "params.yaml", no_progress: bool = False) -> tuple[str, list[str]]:
    """The module and the ``main`` arguments that run DVC stage ``name`` as dvc.yaml does."""
    module, fixed, _ = STAGES[name]
    argv = [*fixed, "--params", params]
    if module == "validate":  # dvc.yaml: --data ${target_data}
        from redraw.config import get, load_params

        argv += ["--data", str(get(load_params(params), "target_data", params))]
    if no_progress and module in NO_PROGRESS_FLAG:
        argv.append("--no-progress")
    return module, argv


def _run_stage(args) -> int:
    from redraw.config import ConfigError

    try:
        module, argv = stage_argv(args.stage, args.params, args.no_progress)
    except ConfigError as exc:
        print(f"stage {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    return importlib.import_module(f"redraw.stages.{module}").main(argv)


def _list_stages(args) -> int:
    width = max(map(len, STAGES))
    for name, (_, _, what) in STAGES.items():
        print(f"{name:{width}s}  {what}")
    return 0


def add_stage_parser(sub) -> None:
    """``redraw stage [NAME]`` and one sub-parser per DVC stage, each with ``--help``."""
    p = sub.add_parser("stage", help="run one DVC stage by its dvc.yaml name (e.g. calibrate@redraw)",
                       description="Run one stage of the pipeline by its name in dvc.yaml, with the code "
                       "`dvc repro` runs (the stage module's main). Outside DVC: dvc.lock is not updated. "
                       "Without NAME, list the stages. `redraw stage NAME --help` says what NAME does.")
    p.set_defaults(func=_list_stages)
    names = p.add_subparsers(dest="stage", metavar="NAME")
    for name, (module, fixed, what) in STAGES.items():
        q = names.add_parser(name, help=what, description=f"DVC stage {name}: {what}. Runs "
                             f"`python -m redraw.stages.{module} {' '.join(fixed)}`".rstrip() + ", as dvc.yaml does.")
        q.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        if module in NO_PROGRESS_FLAG:
            q.add_argument("--no-progress", action="store_true", help="no progress bar")
        q.set_defaults(func=_run_stage, no_progress=False)

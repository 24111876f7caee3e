"""The ``redraw`` command line. Every subcommand has ``--help``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _cmd_envs(args) -> int:
    from redraw.config import ConfigError, load_params
    from redraw.envs import EnvFileError, load_pairs, make_env

    try:
        pairs = args.pairs
        if pairs is None and Path(args.params).is_file():
            pairs = (load_params(args.params).get("env") or {}).get("pairs")
        registry = load_pairs(pairs)
        if args.floor < 0:
            raise ConfigError(f"--floor {args.floor}: the number of episodes must be at least 1 (0: no floor)")
        names = args.env or list(registry.envs)
        for name in names:
            registry.get(name)  # KeyError: not an env of the file, naming those there are
        shown = set(names)
        print(f"env pairs from {registry.file}: each source, then its targets and their perturbations")
        for name, spec in registry.envs.items():
            targets = registry.targets_of(name)
            if spec.is_target or not {name, *targets} & shown:
                continue
            print(f"{name:32s} {spec.simulator} {spec.id}")
            for target in targets:
                if target not in shown and name not in shown:
                    continue
                t = registry.get(target)
                own = f" [{t.simulator} {t.id}]" if (t.simulator, t.id) != (spec.simulator, spec.id) else ""
                print(f"  -> {target:27s} {t.describe()}{own}")
        if args.check:  # build each env once: model names, spaces, the simulator's own checks
            for name in names:
                make_env(name, "proprio", pairs=registry).close()
            print(f"checked: all {len(names)} envs build" if not args.env else f"checked: {', '.join(names)} build")
        if args.floor:
            from redraw.envs.floor import floor_table
            from redraw.results_records import learned_threshold

            print(floor_table(names, registry, args.floor, lambda source: learned_threshold(source, registry)))
    except (ConfigError, EnvFileError, KeyError) as exc:
        print(f"envs: error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_collect(args) -> int:
    from redraw.stages import collect

    argv = [args.which, "--params", args.params] + (["--no-progress"] if args.no_progress else [])
    return collect.main(argv)


def _cmd_validate_stage(args) -> int:
    from redraw.stages import validate

    return validate.main(["--params", args.params, "--data", args.data])


def _contract(args, rate: bool = False):
    """The validation contract: thresholds from params.yaml (if present), overrides from flags.
    ``rate``: also the env's agent-step rate (``redraw data validate``; an import checks the rate
    itself, against its config's ``target.allow_rate_mismatch``)."""
    from redraw.config import load_params
    from redraw.stages.validate import agent_rate, validation_config
    from redraw.validation import ValidationConfig

    if Path(args.params).is_file():
        params = load_params(args.params)
        cfg = validation_config(params, args.params)
    else:
        params, cfg = None, ValidationConfig()
    if rate and args.env is not None and params is not None and not cfg.allow_rate_mismatch:
        other = {**params, "env": {**params["env"], "target": args.env}}
        cfg.expected_control_hz = agent_rate(other, args.params) if args.env else None
    if not rate:
        cfg.expected_control_hz = None
    if args.env is not None:
        cfg.expected_env = args.env or None
    if args.obs_mode is not None:
        cfg.expected_obs_mode = args.obs_mode or None
    if args.min_transitions is not None:
        cfg.min_transitions = args.min_transitions
    if args.min_episode_length is not None:
        cfg.min_episode_length = args.min_episode_length
    return cfg


def _cmd_sweep_data(args) -> int:
    from redraw.config import ConfigError
    from redraw.data.target import TargetDataError
    from redraw.data_sweep import sweep

    try:
        sweep(args.sizes, args.params, tuple(args.methods), progress=not args.no_progress)
    except (ConfigError, TargetDataError, FileNotFoundError, ValueError) as exc:
        print(f"sweep-data: error: {exc}", file=sys.stderr)
        return 2
    print("wrote reports/data_efficiency.json and reports/data_efficiency.png")
    return 0


def _registry_name(args) -> str:
    if args.name:
        return args.name
    from redraw.config import get, load_params
    from redraw.deploy import registered_name

    params = load_params(args.params)
    return registered_name(get(params, "env.source", args.params), get(params, "env.target", args.params))


def _cmd_promote(args) -> int:
    from redraw.config import ConfigError, get, load_params
    from redraw.deploy import DeployError, promote

    try:
        margin = args.margin if args.margin is not None else float(get(load_params(args.params), "promote.margin"))
        promoted, why = promote(_registry_name(args), margin)
    except (ConfigError, DeployError) as exc:
        print(f"promote: error: {exc}", file=sys.stderr)
        return 2
    print(why, file=sys.stdout if promoted else sys.stderr)
    return 0 if promoted else 1


def _cmd_rollback(args) -> int:
    from redraw.config import ConfigError
    from redraw.deploy import DeployError, rollback

    try:
        print(rollback(_registry_name(args)))
    except (ConfigError, DeployError) as exc:
        print(f"rollback: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_deploy(args) -> int:
    from redraw.deploy import DeployError, deploy_returns

    try:
        result = deploy_returns(args.model, args.env, args.episodes, args.seed, progress=not args.no_progress)
    except DeployError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(f"deploy {result['model']} in {result['env']}: return {result['return_mean']:.1f} "
              f"± {result['return_std']:.1f} over {result['episodes']} episodes "
              f"(95% CI [{result['return_ci_low']:.1f}, {result['return_ci_high']:.1f}])")
    return 0


def _cmd_ui(args) -> int:
    import os
    import subprocess

    from redraw.tracking import MLRUNS

    store = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(MLRUNS / 'mlflow.db').resolve()}"
    MLRUNS.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", args.host,
           "--port", str(args.port), "--workers", "1"]
    print(f"MLflow UI on http://{args.host}:{args.port} (store {store}); Ctrl-C stops it")
    return subprocess.call(cmd)


def _cmd_data_validate(args) -> int:
    from redraw.config import ConfigError
    from redraw.stages.validate import report
    from redraw.validation import validate_dataset

    try:
        contract = _contract(args, rate=True)
    except ConfigError as exc:
        print(f"validate: error: {exc}", file=sys.stderr)
        return 2
    result = validate_dataset(args.path, contract, docs_dir=args.docs)
    report(result, out=sys.stdout if result.success else sys.stderr)
    if args.docs:
        print(f"data docs: {Path(args.docs) / 'index.html'}")
    return 0 if result.success else 1


def _import_logs(args):
    """``data import --config``: convert a robot log through its mapping config."""
    from redraw.config import load_params
    from redraw.data.importer import import_logs
    from redraw.data.importers.config import load_config

    cfg = load_config(args.config)
    if args.src:
        cfg.source.paths = [str(Path(p).resolve()) for p in args.src]
    params = load_params(args.params) if Path(args.params).is_file() else None  # the env the data must fit
    result, record = import_logs(cfg, args.dest, _contract(args), replace=args.replace, progress=not args.no_progress,
                                 params=params, params_path=args.params)
    for unit in record["units"]:
        line = (f"  {unit['file']} {unit['unit']}: {unit['episodes']} episode(s), {unit['used_points']} of "
                f"{unit['grid_points']} control steps used, {len(unit['cuts'])} cut(s)")
        if unit.get("repeated_samples"):
            line += f", rows repeating the previous row's sample: {unit['repeated_samples']}"
        if unit["dropped_short"]:
            line += f", {len(unit['dropped_short'])} short span(s) dropped"
        print(line)
    clipped = record["action_clipped_fraction"]
    if any(clipped):
        print(f"  action clipped to [-1, 1]: fraction per dimension {clipped}")
    return result


def _cmd_data_import(args) -> int:
    from redraw.data.importer import ImportRejected, import_dataset
    from redraw.data.schema import DataError
    from redraw.stages.validate import report

    if not args.src and args.config is None:
        print("import: error: give SRC (a schema data set) or --config (a mapping config for a robot log)",
              file=sys.stderr)
        return 2
    if args.config is None and len(args.src) > 1:
        print("import: error: without --config, give one SRC (a schema data set); several logs need --config",
              file=sys.stderr)
        return 2
    try:
        if args.config is not None:
            result = _import_logs(args)
        else:
            result = import_dataset(args.src[0], args.dest, _contract(args), replace=args.replace)
    except ImportRejected as exc:
        report(exc.result, out=sys.stderr)
        print(f"import: nothing was copied to {args.dest}", file=sys.stderr)
        return 1
    except DataError as exc:
        print(f"import: error: {exc}", file=sys.stderr)
        print(f"import: nothing was written to {args.dest}", file=sys.stderr)
        return 2
    except (FileExistsError, FileNotFoundError, ValueError, ModuleNotFoundError) as exc:
        print(f"import: error: {exc}", file=sys.stderr)
        return 2
    report(result)
    print(
        f"import: {result.stats.get('episodes')} episodes now in {args.dest}. To calibrate on them, set "
        f"`target_data: {args.dest}` in params.yaml and track the data with `dvc add {args.dest}`."
    )
    return 0


def _cmd_data_merge(args) -> int:
    from redraw.data.importer import ImportRejected, merge_datasets, parse_part
    from redraw.data.schema import DataError
    from redraw.stages.validate import report

    try:
        parts = [parse_part(text) for text in args.parts]
        result = merge_datasets(parts, args.dest, _contract(args), replace=args.replace)
    except ImportRejected as exc:
        report(exc.result, out=sys.stderr)
        print(f"merge: nothing was written to {args.dest}", file=sys.stderr)
        return 1
    except (DataError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"merge: error: {exc}", file=sys.stderr)
        print(f"merge: nothing was written to {args.dest}", file=sys.stderr)
        return 2
    report(result)
    print(f"merge: {result.stats.get('episodes')} episodes now in {args.dest}. To calibrate on them, set "
          f"`target_data: {args.dest}` and `target_transitions: 0` in params.yaml and track the data with "
          f"`dvc add {args.dest}`.")
    return 0


def _cmd_data_inspect(args) -> int:
    import yaml

    from redraw.data.importers.survey import DRAFT_HEADER, describe, draft, survey_all
    from redraw.data.schema import DataError

    try:
        fmt, sources = survey_all(args.src, args.format)
    except (DataError, ValueError, ModuleNotFoundError, OSError) as exc:
        print(f"inspect: error: {exc}", file=sys.stderr)
        return 2
    rows = [row for _, part in sources for row in part]
    if args.json:
        print(json.dumps({"format": fmt, "sources": [p for p, _ in sources], "streams": rows}, indent=2, default=str))
    else:
        for path, part in sources:
            print(f"{path}: {fmt}")
            print(describe(part))
    if args.draft:
        out = Path(args.draft)
        if out.exists() and not args.replace:
            print(f"inspect: error: {out} exists; pass --replace to overwrite it", file=sys.stderr)
            return 2
        try:
            dims, hz = _draft_env(args)
        except (ValueError, KeyError, ModuleNotFoundError) as exc:
            print(f"inspect: error: {exc}", file=sys.stderr)
            return 2
        notes: list[str] = []
        cfg = draft([str(Path(p).resolve()) for p in args.src], fmt, rows, args.env, args.obs_mode, hz, dims, notes)
        for note in notes:
            print(f"draft: {note}")
        out.write_text(DRAFT_HEADER + "".join(f"# {note}\n" for note in notes)
                       + yaml.safe_dump(cfg, sort_keys=False))
        print(f"draft mapping config: {out} (check it, then `redraw data import --config {out}`)")
    return 0


def _draft_env(args) -> tuple[dict | None, float | None]:
    """inspect --draft: the sizes of --env (None when the env-pair file has no such env) and the
    control rate: --control-hz, else the env's agent-step rate when --params give env.action_repeat."""
    from redraw.config import load_params
    from redraw.data.importers.convert import env_facts
    from redraw.envs.registry import load_pairs

    params = load_params(args.params) if Path(args.params).is_file() else {}
    env_params = params.get("env") or {}
    registry = load_pairs(env_params.get("pairs") or None)
    if args.env not in registry.envs:
        return None, args.control_hz
    dims, timestep = env_facts(args.env, args.obs_mode, 64, registry)
    repeat = env_params.get("action_repeat")
    return dims, args.control_hz or (1.0 / (timestep * int(repeat)) if repeat else None)


def _cmd_data_stats(args) -> int:
    from redraw.data.episodes import dataset_stats
    from redraw.data.schema import DataError, read_metadata

    try:
        meta = read_metadata(args.path)
        stats = dataset_stats(args.path)
    except DataError as exc:
        print(f"stats: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.path}: env={meta.env} obs_mode={meta.obs_mode} behaviour={meta.behaviour} control_hz={meta.control_hz:g}")
    for key, value in stats.items():
        print(f"  {key:12s} {value:.6g}")
    return 0


def _cmd_preset(args) -> int:
    from redraw.config import ConfigError, apply_preset, preset_names

    if args.name is None:
        print("presets: " + ", ".join(preset_names()))
        return 0
    try:
        changed = apply_preset(args.name, args.params)
    except ConfigError as exc:
        print(f"preset: error: {exc}", file=sys.stderr)
        return 2
    print(f"preset {args.name}: {len(changed)} key(s) changed in {args.params}" + (": " + ", ".join(changed) if changed else ""))
    return 0


def _cmd_pair(args) -> int:
    from redraw.config import ConfigError, load_params, set_params
    from redraw.envs import EnvFileError, load_pairs
    from redraw.envs.pair import check_pair, pairs_of

    try:
        params = load_params(args.params)
        env = dict(params.get("env") or {})
        if args.pairs is not None:
            env["pairs"] = args.pairs
        target = args.target
        if target is None:  # a source with one target stands for it
            registry = load_pairs(pairs_of({"env": env}))
            spec = registry.envs.get(args.source)
            targets = registry.targets_of(args.source) if spec is not None and not spec.is_target else None
            if targets is None:
                sources = [n for n, s in registry.envs.items() if not s.is_target]
                raise ConfigError(f"{args.source!r} is not a source in {registry.file} (sources: {', '.join(sources)})")
            if len(targets) != 1:
                raise ConfigError(f"{args.source!r} has {len(targets)} targets in {registry.file} "
                                  f"({', '.join(targets) or 'none'}); give TARGET")
            target = targets[0]
        env.update(source=args.source, target=target)
        registry = check_pair({**params, "env": env}, args.params)
        keys = {"env.pairs": args.pairs} if args.pairs is not None else {}
        keys.update({"env.source": args.source, "env.target": target})
        changed = set_params(keys, args.params, source="pair", known={"env": {"pairs": args.pairs}})
    except (ConfigError, EnvFileError) as exc:
        print(f"pair: error: {exc}", file=sys.stderr)
        return 2
    print(f"pair {args.source} -> {target} ({registry.file}): {len(changed)} key(s) changed in {args.params}"
          + (": " + ", ".join(changed) if changed else ""))
    return 0


def _cmd_regime(args) -> int:
    from redraw.config import ConfigError, set_params
    from redraw.data.behaviours import TARGET_REGIMES

    if args.name is None:
        for name, (what, _) in TARGET_REGIMES.items():
            print(f"{name:14s} {what}")
        return 0
    if args.name not in TARGET_REGIMES:
        print(f"regime: error: unknown regime {args.name!r}; choose one of {', '.join(TARGET_REGIMES)}", file=sys.stderr)
        return 2
    keys = {f"collect_target.behaviour.{k}": v for k, v in TARGET_REGIMES[args.name][1].items()}
    try:
        changed = set_params(keys, args.params, source=f"regime {args.name}")
    except ConfigError as exc:
        print(f"regime: error: {exc}", file=sys.stderr)
        return 2
    print(f"regime {args.name}: {len(changed)} key(s) changed in {args.params}" + (": " + ", ".join(changed) if changed else ""))
    return 0


def _preset_listing(names: list[str]) -> str:
    """One line per preset: its name and the first comment line of presets/NAME.yaml."""
    from redraw.config import PRESETS_DIR

    if not names:
        return f"  (none: no {PRESETS_DIR}/*.yaml in this directory; run from the repository root)"
    lines = []
    for name in names:
        text = (Path(PRESETS_DIR) / f"{name}.yaml").read_text().splitlines()
        what = next((line.lstrip("# ").strip() for line in text if line.startswith("#")), "")
        lines.append(f"  {name:8s} {what}")
    return "\n".join(lines)


def _cmd_repro(args) -> int:
    import subprocess

    from redraw import scheduler

    if args.jobs < 1:
        print(f"redraw repro: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    from redraw.config import ConfigError
    from redraw.stages import stage_params

    try:  # the pair params.yaml picks, before any stage runs (each stage checks it again)
        stage_params("params.yaml")
    except ConfigError as exc:
        print(f"redraw repro: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.jobs == 1:
            scheduler.dvc(["repro"], Path("."))
        else:
            scheduler.repro(".", args.jobs, args.logs)
    except subprocess.CalledProcessError as exc:
        print(f"redraw repro: {' '.join(map(str, exc.cmd[2:]))} failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # a stage run side by side failed: its log's end
        print(f"redraw repro: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_report(args) -> int:
    from redraw.results_report import ResultsError, build_report

    try:
        out = build_report(args.results, args.out, args.figures)
    except ResultsError as exc:
        print(f"redraw report: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def _cmd_experiment(args) -> int:
    import importlib

    from redraw.experiments import EXPERIMENTS

    module = importlib.import_module(EXPERIMENTS[args.name].module)
    argv = sys.argv
    sys.argv = [f"redraw experiment {args.name}", *args.args]  # its usage and errors name this command
    try:
        return module.main(args.args)
    finally:
        sys.argv = argv


def build_parser() -> argparse.ArgumentParser:
    from redraw.cli_stages import add_stage_parser
    from redraw.config import preset_names

    presets = preset_names()
    parser = argparse.ArgumentParser(
        prog="redraw",
        description="ReDRAW: adapt a simulator-trained latent world model to a target system. "
        "The pipeline itself runs with `dvc repro`; these commands run its pieces by hand.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("repro", help="dvc repro with independent stages side by side (what `make repro` runs)",
                       description="Run the whole DVC pipeline: each stage of dvc.yaml that is not up to date starts as "
                       "soon as the stages it needs are done, --jobs at a time (the cores split between them, "
                       "output in logs/), is recorded in dvc.lock with `dvc commit` when it finishes, and a final "
                       "`dvc repro` confirms that everything is up to date. --jobs 1 is plain `dvc repro`.")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="stages at a time (default: min(2, cores))")
    p.add_argument("--logs", default="logs", help="directory for the stages' logs (default: logs)")
    p.set_defaults(func=_cmd_repro)

    p = sub.add_parser("report", help="build docs/results.md from the quality benchmark's results file",
                       description="Build the results report (markdown and figures) from the records that "
                       "`redraw experiment transfer_quality` merges into its results file: per setting and pair, "
                       "each method's mean return with a 95% interval over seeds, its share of the oracle, and the "
                       "paper's two claims checked on the per-seed differences. Void points (a training that did "
                       "not learn its task) are listed, never averaged in. The paired comparisons beside it "
                       "(onpolicy_round.json, policy_variants.json) get a section each. A bad record is refused "
                       "by name.")
    p.add_argument("--results", default="benchmarks/results/transfer_quality.json",
                   help="results file (default: benchmarks/results/transfer_quality.json)")
    p.add_argument("--out", default="docs/results.md", help="report to write (default: docs/results.md)")
    p.add_argument("--figures", default=None, help="figure directory (default: docs/figures/results)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("envs", help="list the source and target envs of the env-pair file",
                       description="List the envs of the env-pair file (env.pairs in params.yaml; format: "
                       "docs/envs.md) and the perturbations each target applies to its source.")
    p.add_argument("--pairs", default=None, metavar="FILE", help="env-pair file (default: env.pairs of --params)")
    p.add_argument("--params", default="params.yaml", help="params file naming the env-pair file (default: params.yaml)")
    p.add_argument("--check", action="store_true",
                   help="also build every env once, so that a bad body/geom/joint/actuator name is refused now")
    p.add_argument("--floor", type=int, default=0, metavar="EPISODES",
                   help="also run each env for EPISODES episodes (seeds 0..EPISODES-1) with zero actions and with "
                   "uniform random ones: the return a policy gets without any skill, beside the return a "
                   "pretraining must reach to count as learnt")
    p.add_argument("--env", nargs="+", default=None, metavar="NAME",
                   help="only these envs: the listing (a source with its targets named), --check and --floor")
    p.set_defaults(func=_cmd_envs)

    p = sub.add_parser("collect", help="collect simulator episodes (DVC stages collect_source/_target/_oracle)",
                       description="Collect episodes for env.source -> data/source or env.target -> data/target, "
                       "with the behaviour and sizes in params.yaml; oracle: env.target with collect_source's "
                       "behaviour and size -> data/oracle (where the oracle's training starts).")
    p.add_argument("which", choices=["source", "target", "oracle"])
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_collect)

    p = sub.add_parser("validate", help="validate the target data (DVC stage validate_target)",
                       description="Run the target-data contract on the configured target data and write "
                       "reports/validate_target.json and the data docs.")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--data", default="data/target", help="data set directory (default: data/target)")
    p.set_defaults(func=_cmd_validate_stage)

    p = sub.add_parser("preset", help="switch params.yaml to a named preset (" + ", ".join(presets) + ")",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Write the keys of presets/NAME.yaml into params.yaml and record `preset: NAME`. "
                       "Without NAME, list the presets.\n\npresets (in presets/):\n" + _preset_listing(presets))
    p.add_argument("name", nargs="?", help="preset name")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.set_defaults(func=_cmd_preset)

    p = sub.add_parser("pair", help="check an env pair and pick it in params.yaml (env.source, env.target)",
                       description="Check that TARGET is a target of SOURCE in the env-pair file and that the two "
                       "have the same observations and action space (what every stage checks first), then write "
                       "env.source, env.target and, with --pairs, env.pairs into params.yaml, its comments kept. "
                       "Nothing is written when the check fails. Without TARGET, SOURCE's only target.")
    p.add_argument("source", help="a source env of the env-pair file (`redraw envs` lists them)")
    p.add_argument("target", nargs="?", default=None, help="one of its targets (default: its only one)")
    p.add_argument("--pairs", default=None, metavar="FILE", help="env-pair file (default: env.pairs of --params)")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.set_defaults(func=_cmd_pair)

    p = sub.add_parser("regime", help="set the target data's behaviour to a named regime (expert, source_policy, ...)",
                       description="Write the collect_target.behaviour keys of a named target-data regime into "
                       "params.yaml (then `dvc repro` collects the target data again). Without NAME, list them.")
    p.add_argument("name", nargs="?", help="regime name")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.set_defaults(func=_cmd_regime)

    p = sub.add_parser("sweep-data", help="return vs target-data size for every adaptation method",
                       description="Run calibrate -> train_policy -> evaluate for each method at each target-data "
                       "size (the newest N transitions) in sweeps/data_efficiency/N/, after `dvc repro`; "
                       "writes reports/data_efficiency.{json,png}. Sizes already done are reused.")
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000, 40000],
                   help="target transitions to use (default: 5000 10000 20000 40000)")
    from redraw.methods import names

    main_methods = names(lambda m: m.calibrated and m.paper)  # the paper's; the others on request
    p.add_argument("--methods", nargs="+", default=list(main_methods),
                   help=f"adaptation methods (default: {' '.join(main_methods)}; "
                   f"{' '.join(names(lambda m: m.calibrated and not m.paper))} on request)")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_sweep_data)

    def registry_flags(q):
        q.add_argument("--name", default=None,
                       help="registered model (default: <env.source>-to-<env.target> from params.yaml)")
        q.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")

    p = sub.add_parser("promote", help="move alias champion to the challenger if it is better (gated)",
                       description="Promote the registered model's challenger to champion only if its target return "
                       "beats the champion's by more than the margin (or there is no champion); otherwise refuse "
                       "(exit 1) and say why. Every promotion is recorded on the version (tags, description).")
    registry_flags(p)
    p.add_argument("--margin", type=float, default=None, help="required improvement (default: params promote.margin)")
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser("rollback", help="give alias champion back to the previous champion",
                       description="Undo the last promotion: champion returns to the version that held it before.")
    registry_flags(p)
    p.set_defaults(func=_cmd_rollback)

    p = sub.add_parser("deploy", help="run a registered policy in a simulator (the robot stand-in)",
                       description="Load a policy by URI (e.g. models:/pendulum-swingup-to-pendulum-swingup-reversed"
                       "@champion) and run it one observation at a time in --env with the evaluate stage's seeds.")
    p.add_argument("--model", required=True, help="MLflow model URI, e.g. models:/<name>@champion")
    p.add_argument("--env", default=None, help="env to run in (default: the target the model was trained for)")
    p.add_argument("--episodes", type=int, default=10, help="episodes (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0, as params seed: same returns as evaluate)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_deploy)

    p = sub.add_parser("ui", help="start the MLflow UI on the project's store (loopback)",
                       description="`mlflow ui --workers 1` on the project's store (MLFLOW_TRACKING_URI, or "
                       "mlruns/mlflow.db), bound to 127.0.0.1 unless --host says otherwise.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    p.set_defaults(func=_cmd_ui)

    add_stage_parser(sub)

    import textwrap

    from redraw.experiments import EXPERIMENTS, listing

    p = sub.add_parser("experiment", help="run an experiment of redraw.experiments on work dirs (`--help` lists them)",
                       description=textwrap.fill(
                           "Run an experiment: a driver that measures results on the pipeline's work directories "
                           "(the quality benchmark, references, rounds, diagnostics) and merges its records into "
                           "benchmarks/results/. `redraw experiment NAME ARGS...` runs what `python -m "
                           "redraw.experiments.NAME ARGS...` runs; `redraw experiment NAME --help` lists its own "
                           "options. The speed measurements are the scripts in benchmarks/.", 100),
                       epilog="experiments:\n" + listing(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", choices=list(EXPERIMENTS), help="the experiment (listed below)")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="its own arguments, passed on as they are")
    p.set_defaults(func=_cmd_experiment)

    from redraw.pretrained import add_parser as add_pretrained_parser

    add_pretrained_parser(sub)

    from redraw.rounds import add_parser as add_rounds_parser

    add_rounds_parser(sub)

    data = sub.add_parser("data", help="inspect, validate and import episode data sets",
                          description="Episode data sets: see docs/episode-schema.md for the format.")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    def contract_flags(q):
        q.add_argument("--params", default="params.yaml",
                       help="thresholds from this params file's `validate` section if it exists (default: params.yaml)")
        q.add_argument("--env", default=None, help="expected env in metadata (default: params env.target; '' = any)")
        q.add_argument("--obs-mode", default=None, help="expected obs mode (default: params env.obs_mode; '' = any)")
        q.add_argument("--min-transitions", type=int, default=None, help="minimum total agent steps")
        q.add_argument("--min-episode-length", type=int, default=None, help="minimum agent steps per episode")

    q = dsub.add_parser("validate", help="run the data contract on any directory",
                        description="Run the target-data checks on PATH and print every failed check with its file "
                        "and field. Exit status 1 when the data is rejected. Reads, never writes, PATH.")
    q.add_argument("path", help="data set directory (metadata.json + *.npz)")
    q.add_argument("--docs", default=None, help="also build Great Expectations HTML data docs into this directory")
    contract_flags(q)
    q.set_defaults(func=_cmd_data_validate)

    q = dsub.add_parser("import", help="bring a robot's logs or external episodes into the project",
                        description="Without --config: validate SRC (a schema data set) and, only if it passes, copy "
                        "it to DEST atomically. With --config: convert a ROS bag, LeRobot dataset or HDF5 log as the "
                        "mapping config says (docs/import.md), one row per control step, validate the result and "
                        "write it to DEST only if it passes; its metadata records the config and a quality report.")
    q.add_argument("src", nargs="*", default=[], metavar="SRC",
                   help="schema data set directory; with --config: the logs, e.g. several bags or a folder of bags "
                   "(replace the config's source.paths)")
    q.add_argument("--config", default=None, help="mapping config (YAML) for a robot log (docs/import.md)")
    q.add_argument("--dest", default="data/imported", help="destination directory (default: data/imported)")
    q.add_argument("--replace", action="store_true", help="replace DEST if it already holds data")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    contract_flags(q)
    q.set_defaults(func=_cmd_data_import)

    q = dsub.add_parser("merge", help="combine episode data sets, e.g. the expert's and a deployed policy's logs",
                        description="Put the episodes of every PART into one data set at DEST, in order and "
                        "renumbered: e.g. the target data a policy was calibrated on and the logged episodes of that "
                        "policy deployed on the robot, to calibrate again where the policy goes "
                        "(docs/residual.md). The parts must share env, observations, action space and rates; the "
                        "merged data are validated with the same contract as `data import` and written only if "
                        "they pass. Episodes are hard links where the file system allows.")
    q.add_argument("parts", nargs="+", metavar="PART",
                   help="a data set directory, or DIR:N for its first N episodes")
    q.add_argument("--dest", required=True, help="destination directory")
    q.add_argument("--replace", action="store_true", help="replace DEST if it already holds data")
    contract_flags(q)
    q.set_defaults(func=_cmd_data_merge)

    q = dsub.add_parser("inspect", help="list a robot log's streams (rates, shapes, gaps) and draft a config",
                        description="List the topics (ROS bag), features (LeRobot) or datasets (HDF5) of SRC with "
                        "their type, count, rate, jitter, longest gap and shape; with --draft, write a mapping config "
                        "guessed from them for `redraw data import --config` (docs/import.md).")
    q.add_argument("src", nargs="+", metavar="SRC",
                   help="ROS bags (directory, .bag, .db3, .mcap) or folders of bags, LeRobot dataset roots, or HDF5 "
                   "files")
    q.add_argument("--format", choices=["rosbag", "lerobot", "hdf5"], default=None, help="default: detected")
    q.add_argument("--json", action="store_true", help="print the streams as JSON")
    q.add_argument("--draft", default=None, metavar="FILE", help="write a draft mapping config to FILE")
    q.add_argument("--replace", action="store_true", help="overwrite FILE if it exists")
    q.add_argument("--env", default="pendulum-swingup-reversed", help="draft: target env (default: %(default)s)")
    q.add_argument("--obs-mode", default="proprio", choices=["pixels", "proprio"], help="draft: (default: %(default)s)")
    q.add_argument("--control-hz", type=float, default=None,
                   help="draft: agent rate (default: the env's agent-step rate from --params, else a guess per format)")
    q.add_argument("--params", default="params.yaml",
                   help="draft: env.pairs and env.action_repeat from this params file if it exists (default: "
                   "params.yaml)")
    q.set_defaults(func=_cmd_data_inspect)

    q = dsub.add_parser("stats", help="episodes, transitions and returns of a data set",
                        description="Print a data set's metadata summary and return statistics.")
    q.add_argument("path", help="data set directory")
    q.set_defaults(func=_cmd_data_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

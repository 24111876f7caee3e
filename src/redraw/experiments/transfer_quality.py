"""Quality benchmark: every transfer method on the paper's env pairs (default pendulum-swingup -> pendulum-swingup-reversed).

Runs the whole pipeline (`dvc repro`) on a preset (default `cpu`, proprio) for each pair and seed,
in a scratch copy of this repository, and prints the results table across seeds beside the paper's
claim: ReDRAW above DRAW-finetune, DreamerV3-finetune and no-adapt, and at least 80% of the
oracle's target return with 40k target transitions. As in the paper, the target data are episodes
of an expert, the oracle's policy, its actions sampled from its actor and nothing else. The
``half-noise`` variant (``--noise-fraction 0.5``) replaces half of the episodes with correlated
noise, and is reported as that variant; ``--target-behaviour preset`` keeps the preset's behaviour.

    redraw experiment transfer_quality                         # cpu preset, seed 0 (hours on 2 cores)
    redraw experiment transfer_quality --seeds 0 1 2 --target-transitions 40000
    redraw experiment transfer_quality --noise-fraction 0.5     # the half-noise variant of the target data
    redraw experiment transfer_quality --target-behaviour preset     # target data from noise, not the oracle
    redraw experiment transfer_quality --preset smoke          # minutes: checks the benchmark itself
    redraw experiment transfer_quality --methods no_adapt redraw      # a subset (no pretrain_rssm without dreamer_finetune)
    redraw experiment transfer_quality --set pretrain.imag_clip=true     # any params.yaml key, after the preset
    redraw experiment transfer_quality --pairs all --seeds 0 1 2        # the four pairs of envs.yaml
    redraw experiment transfer_quality --pairs all --until pretrain     # only: does the source pretraining learn?
    redraw experiment transfer_quality --harvest                        # record what the work dirs hold so far
    redraw experiment transfer_quality --status                         # where each work dir stands; writes nothing
    redraw experiment transfer_quality --set train_policy.adapt=true     # the reference's concurrent schedule

Every finished training and evaluation is merged into ``benchmarks/results/transfer_quality.json``
(``--results``): one record per (pair, seed, method, target_transitions, protocol) with the
evaluation's return, and one per training (pretrain, oracle, pretrain_rssm) with its learning
curve and whether it learnt its task (``redraw.results_records.learned_threshold``: the return its last
evaluation must reach, the env-pair file's ``learned:`` or the paper's four's).
A method whose source pretraining did not learn is recorded with ``"valid": false``.
``redraw report`` turns that file into docs/results.md.

Work directories are kept (``--workdir``, default ``$XDG_STATE_HOME/redraw/transfer-quality``, else
``~/.local/state/...``), so a run that is stopped resumes where DVC left it and its trainings from
their last checkpoint, on the code the work dir started with (``--update-code``: this checkout's);
``--status`` says where each stands and how long its trainings have left.

Stages that do not depend on each other run side by side, ``--jobs`` at a time with the cores
shared between them (``dvc repro`` runs stages one after another): each stage starts as soon as
the stages it needs are done, the three trainings (``pretrain``, ``oracle``, ``pretrain_rssm``)
first, and is recorded in dvc.lock with ``dvc commit`` when it finishes (see ``run_side_by_side``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

from redraw import scheduler
from redraw.experiments.provenance import ROOT, commit
from redraw.results_records import (METHODS, TRAININGS, VARIANT_FILE, load_yaml, merge_results, policy_progress,
                                    pretrain_seed, progress_line, target_data, training_progress, workdir_records,
                                    workdir_variant)
from redraw.results_records import hours as _hours  # noqa: F401 (tests read it here)
from redraw.scheduler import venv_env

RESULTS = ROOT / "benchmarks/results/transfer_quality.json"
DEFAULT_PAIR = "pendulum-swingup-reversed"
#: what a work dir takes from the checkout: its code, pipeline and base params
CODE_ITEMS = ("dvc.yaml", "params.yaml", "envs.yaml", "presets", "scripts", "src", "pretrained", ".gitignore", ".dvcignore")
#: the work dirs' root: a run takes days on a CPU and resumes from them, so not /tmp (wiped at a
#: reboot on many systems) but the user's state directory (XDG_STATE_HOME, else ~/.local/state)
DEFAULT_WORKDIR = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local/state") / "redraw/transfer-quality"


class WorkdirError(RuntimeError):
    """A kept work dir that cannot be brought to what was asked (its message names it and says what to do)."""


def sh(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, env=venv_env(), check=True)


def stage_targets(methods: tuple[str, ...], trainings_only: bool = False) -> list[str]:
    """The stages the benchmark brings up to date for ``methods`` (with what they need): the
    trainings (the RSSM's only for dreamer_finetune), or every method's evaluation (the source
    policy in the source simulator and the oracle always)."""
    trainings = [t for t in TRAININGS if t != "pretrain_rssm" or "dreamer_finetune" in methods]
    return trainings if trainings_only else [*trainings, *(f"evaluate@{m}" for m in ("source", *methods))]


def run_side_by_side(workdir: Path, jobs: int, methods: tuple[str, ...] = METHODS,
                     trainings_only: bool = False) -> None:
    """Everything up to the results table, independent stages ``jobs`` at a time.

    ``dvc repro`` runs one stage after another. Here each stage starts as soon as the stages it
    needs are done (``redraw.scheduler.schedule``): the three trainings side by side, then each
    method's calibration, policy training and evaluation as soon as its inputs exist; each is
    recorded in dvc.lock when it finishes, so the final ``dvc repro results`` finds them done. A
    stopped benchmark resumes: finished stages are not run again, and the trainings continue
    from their stage checkpoints.
    """
    scheduler.schedule(workdir, jobs, ".", stage_targets(methods, trainings_only))


def prepare(workdir: Path, preset: str, seed: int, transitions: int | None, behaviour: str,
            methods: tuple[str, ...] = METHODS, noise_fraction: float = 0.0,
            overrides: dict[str, object] | None = None, pair: str = DEFAULT_PAIR,
            update_code: bool = False, shipped: dict[str, str] | None = None) -> None:
    """Bring ``workdir`` to its code, pipeline and params (a new one: this checkout's), then the
    preset and the benchmark's settings: on a kept work directory DVC then re-runs exactly what
    changed.

    A kept work directory whose code is of another commit keeps that code (its files restored from
    that commit, so a training stopped midway resumes on the code it started with, never on a mix)
    unless ``update_code``: then it takes this checkout's, and DVC re-runs every stage the change
    touches, a stopped training resuming its checkpoint under the new code. Raises WorkdirError
    where the kept code cannot be restored (it was uncommitted, or its commit is not in this
    repository) and ``update_code`` is not set."""
    fresh, current = not (workdir / "dvc.yaml").is_file(), commit(ROOT)
    kept = None if fresh or update_code else workdir_commit(workdir)
    if kept == current:
        kept = None
    elif kept is not None:
        if not restorable(kept):
            raise WorkdirError(f"{workdir}: its code is of {kept}, which cannot be restored from this repository "
                               "(uncommitted or unknown); --update-code brings this checkout's code in (a stopped "
                               "training then resumes under it), or choose another --workdir")
        print(f"{workdir}: resuming on its own code of {kept} (this checkout: {current}); --update-code brings "
              "this checkout's code in", flush=True)
    workdir.mkdir(parents=True, exist_ok=True)
    bring_code(workdir, CODE_ITEMS, at=kept)
    if fresh:
        sh(["git", "init", "-q"], workdir)
        sh([sys.executable, "-m", "dvc", "init", "-q"], workdir)
        sh([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], workdir)
    sh([sys.executable, "-m", "redraw.cli", "preset", preset], workdir)
    from ruamel.yaml import YAML

    yaml = YAML()
    params = yaml.load((workdir / "params.yaml").read_text())
    params["seed"] = seed
    params["env"]["source"], params["env"]["target"] = source_of(pair), pair
    if transitions:
        params["collect_target"]["transitions"] = transitions
    if behaviour != "preset":  # episodes of a policy: the oracle's (the paper's data) or the source's on the target
        params["collect_target"]["behaviour"]["kind"] = "policy"
        params["collect_target"]["behaviour"]["checkpoint"] = BEHAVIOUR_CHECKPOINTS[behaviour]
        params["collect_target"]["behaviour"]["noise_fraction"] = noise_fraction
    params["evaluate"]["methods"] = ["source", *methods]  # METHODS ends with the oracle
    if shipped:  # the nested protocol: the trainings are shipped models (pretrained/), not run here
        params["pretrained"] = {"source": "", "rssm": "", "expert": "", **shipped}
    with open(workdir / "params.yaml", "w") as fh:
        yaml.dump(params, fh)
    variant = workdir / VARIANT_FILE  # what the records of this run are told apart by
    variant.unlink(missing_ok=True)
    if overrides:  # last, so that they win over the preset and the settings above
        from redraw.config import set_params

        set_params(overrides, workdir / "params.yaml", source="--set")
        # where compiled kernels are cached changes no number: not a variant (a cache shared by the
        # work dirs spares each stage process its compilation)
        variant.write_text("".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}\n"
                                   for k, v in sorted(overrides.items()) if k not in NOT_VARIANT))


#: ``--set`` keys that change no result, so records made with them are not a variant
NOT_VARIANT = ("perf.cache_dir",)


def bring_code(workdir: Path, items, at: str | None = None) -> None:
    """``items`` (files and folders of this checkout, or as they are in commit ``at`` of this
    repository) copied over ``workdir``'s, and its COMMIT file naming that commit."""
    for item in items:
        dst = workdir / item
        if (ROOT / item).is_dir() or dst.is_dir():
            shutil.rmtree(dst, ignore_errors=True)
    if at is not None:
        archive = subprocess.run(["git", "archive", "--format=tar", at, *items], cwd=ROOT, capture_output=True)
        if archive.returncode:
            raise WorkdirError(f"{workdir}: cannot restore its code of {at}: {archive.stderr.decode().strip()}")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(workdir, filter="data")
    else:
        for item in items:
            src, dst = ROOT / item, workdir / item
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src, dst)
    (workdir / "COMMIT").write_text((at or commit(ROOT)) + "\n")


def restorable(rev: str) -> bool:
    """Whether this repository holds commit ``rev`` (a ``+dirty`` one never: its changes were not kept)."""
    if rev.endswith("+dirty") or rev == "unknown":
        return False
    return subprocess.run(["git", "cat-file", "-e", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True).returncode == 0


def registry():
    from redraw.envs.registry import load_pairs

    return load_pairs(ROOT / "envs.yaml")


def source_of(pair: str) -> str:
    return registry().source_of(pair)


def pair_names(names: list[str]) -> list[str]:
    """``--pairs``: target envs of envs.yaml, or ``all`` (the four paper pairs); KeyError names a bad one."""
    reg = registry()
    if names == ["all"]:
        return [t for _, t in reg.pairs()]
    for name in names:
        reg.source_of(name)  # KeyError: not a target env, with the targets there are
    return list(names)


def workdir_commit(workdir: Path) -> str:
    """The commit whose code ``prepare`` last copied into ``workdir``."""
    file = workdir / "COMMIT"
    return file.read_text().strip() if file.is_file() else "unknown"


def parse_set(items: list[str], flag: str = "--set") -> dict[str, object]:
    """``KEY=VALUE`` strings (dotted params.yaml keys, YAML values) as a dict; ValueError names a bad
    one and the option (``flag``) it came with."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE, e.g. pretrain.imag_clip=true")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


#: the policy whose episodes are the target data, by --target-behaviour (collect_target depends on both)
BEHAVIOUR_CHECKPOINTS = {"expert": "models/oracle/agent.pt", "source_policy": "models/pretrain/agent.pt"}


def describe_target(behaviour: str, noise_fraction: float) -> str:
    if behaviour == "preset":
        return "the preset behaviour"
    if behaviour == "source_policy":
        return "the source policy acting on the target (regime b: what a robot team has first)" + \
            (f", {noise_fraction:.0%} of the episodes correlated noise" if noise_fraction else "")
    if not noise_fraction:
        return "the oracle (expert) only, the paper's data"
    name = " (the half-noise variant, not the paper's data)" if noise_fraction == 0.5 else \
        " (a variant, not the paper's data)"
    return f"the oracle (expert), {noise_fraction:.0%} of the episodes correlated noise{name}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", help="params preset (default: cpu)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default: 0)")
    parser.add_argument("--target-transitions", type=int, default=None,
                        help="target data size (default: the preset's; the paper's claim is at 40000)")
    parser.add_argument("--target-behaviour", choices=("expert", "source_policy", "preset"), default="expert",
                        help="who collects the target data: the oracle's policy, as in the paper (default); the "
                        "source policy deployed on the target (regime b; work dirs ...-source_policy); or the "
                        "preset's collect_target.behaviour as it is (cpu: the oracle's episodes only; quick: "
                        "correlated noise)")
    parser.add_argument("--noise-fraction", type=float, default=0.0,
                        help="with the expert: the share of target episodes that take correlated noise instead "
                        "(default 0: the paper's expert-only data; 0.5: the half-noise variant, which shows the "
                        "calibration actions off the expert's)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="methods to run (default: all); the source policy and the oracle always run, and "
                        "pretrain_rssm only for dreamer_finetune")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="root of the work dirs, PAIR/PRESET-seedN below it, kept so that a stopped run resumes "
                        f"(default: {DEFAULT_WORKDIR})")
    parser.add_argument("--jobs", type=int, default=min(3, os.cpu_count() or 1),
                        help="independent stages (the three trainings, then the calibrations, the policy "
                        "trainings, the evaluations) run this many at a time (default: min(3, cores); "
                        "1: leave it all to dvc repro, one stage after another)")
    parser.add_argument("--pairs", nargs="+", default=[DEFAULT_PAIR], metavar="TARGET",
                        help=f"target envs of envs.yaml (their sources from there), or 'all' (default: {DEFAULT_PAIR})")
    parser.add_argument("--until", choices=("pretrain", "trainings", "results"), default="results",
                        help="stop after the source pretraining, after the three trainings, or run everything "
                        "(default: results)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help=f"results file the records are merged into (default: {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--clone-steps", type=int, default=20000,
                        help="after a work dir's results, the reference without a world model "
                        "(the bc_reference experiment: the target data's actions cloned, on the same test episodes; "
                        "about 90 s at the cpu preset) with this many gradient steps, its records in "
                        "bc_reference.json beside --results (default %(default)s; 0: skip it)")
    parser.add_argument("--update-code", action="store_true",
                        help="bring this checkout's code into kept work dirs of another commit (default: a kept "
                        "work dir resumes on the code it started with, restored from its commit; with this, DVC "
                        "re-runs the stages the change touches and a stopped training resumes its checkpoint "
                        "under the new code)")
    parser.add_argument("--harvest", action="store_true",
                        help="only record what the work dirs under --workdir hold so far (finished or stopped "
                        "trainings, finished evaluations) in --results")
    parser.add_argument("--status", action="store_true",
                        help="only print where each work dir under --workdir stands (each training's step, pace "
                        "and time left, the methods evaluated so far); writes nothing")
    parser.add_argument("--pretrain-seeds", type=int, nargs="+", default=None, metavar="P",
                        help="the nested protocol: start every seed from the shipped source pretraining P of the "
                        "pair and its expert (pretrained/), for each P given, instead of training them; work dirs "
                        "PAIR/PRESET-pP-seedN, records with pretrain_seed P")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="set a params.yaml key (dotted, must exist) after the preset and the benchmark's "
                        "own settings, e.g. --set pretrain.imag_clip=true; repeatable")
    return parser


def work_dirs(root: Path, preset: str | None = None) -> list[Path]:
    """The pipeline work dirs under ``root`` (``PAIR/PRESET-seedN``), of ``preset`` if given. A
    directory whose name is not its own params' ``PRESET-seedN`` (a copy made to try a variant,
    say ``cpu-seed1-unimix``) is not one: its results are not the benchmark's and never harvested."""
    dirs = []
    for f in sorted(root.glob("*/*/params.yaml")):
        params = load_yaml(f)
        data = target_data(params) if params.get("collect_target") else "expert"  # params of a minimal copy: none
        if f.parent.name == workdir_name(params.get("preset"), params.get("seed"), pretrain_seed(params), data) and \
                (not preset or params.get("preset") == preset):
            dirs.append(f.parent)
    return dirs


def workdir_name(preset, seed, pretrain: int | None = None, data: str = "expert") -> str:
    """``PRESET-seedN``, or ``PRESET-pP-seedN`` for adaptation seed N from shipped pretraining P;
    with ``-source_policy`` where the target data are the source policy's (regime b, ``data``:
    ``records.target_data``), so that its runs never reuse the expert-data regime's work dirs."""
    name = f"{preset}-seed{seed}" if pretrain is None else f"{preset}-p{pretrain}-seed{seed}"
    return name + ("-source_policy" if data.startswith("source_policy") else "")


def shipped_models(pair: str, pretrain: int, methods: tuple[str, ...]) -> tuple[dict[str, str], tuple[str, ...]]:
    """``pretrained.*`` for pretraining seed ``pretrain`` of ``pair`` (the source and its expert
    must be shipped; the RSSM of that seed, else the pair's first shipped one), and the methods
    left to run (dreamer_finetune only where an RSSM is shipped)."""
    from redraw.pretrained import entry_name, load_manifest

    names = {r["name"] for r in load_manifest(ROOT)}
    shipped = {}
    for role in ("source", "expert"):
        name = entry_name(pair, role, pretrain)
        if name not in names:
            raise WorkdirError(f"{name} is not shipped (pretrained/manifest.json); `redraw pretrained build "
                               f"{pair} --seed {pretrain}` makes it")
        shipped[role] = name
    rssm = [n for n in sorted(names) if n.startswith(f"{pair}/rssm-")]
    own = entry_name(pair, "rssm", pretrain)
    if own in names or rssm:
        shipped["rssm"] = own if own in names else rssm[0]
    elif "dreamer_finetune" in methods:
        print(f"{pair}: no RSSM is shipped, so dreamer_finetune is left out", flush=True)
        methods = tuple(m for m in methods if m != "dreamer_finetune")
    return shipped, methods


def status(root: Path, preset: str | None = None) -> int:
    """Print where every work dir under ``root`` stands; the time left of an unfinished training
    is at its own pace so far (its training seconds per step, every process of a resumed run)."""
    dirs = work_dirs(root, preset)
    if not dirs:
        print(f"{root}: no work dirs{f' of the {preset} preset' if preset else ''} yet")
        return 0
    for workdir in dirs:
        params = load_yaml(workdir / "params.yaml")
        variant = workdir_variant(workdir)
        print(f"{params['env']['target']} seed {params['seed']} ({params.get('preset')} preset, code "
              f"{workdir_commit(workdir)}{', ' + variant if variant else ''}): {workdir}")
        rows = {r["training"]: r for r in training_progress(workdir)}
        for name in TRAININGS:
            r = rows.get(name)
            if r is None:
                print(f"  {name:<14} not started")
                continue
            last = f"last eval {r['last_eval'][1]:.1f} at step {r['last_eval'][0]:,}" if r["last_eval"] else "no eval yet"
            print(f"  {name:<14} "
                  f"{progress_line(r['finished'], r['step'], r['steps'], 'steps', r['seconds'], r.get('updated'), last)}")
        done = sorted(p.stem for p in (workdir / "reports/evaluate").glob("*.json"))
        print(f"  evaluated: {', '.join(done) if done else 'nothing yet'}")
        for r in policy_progress(workdir):
            print(f"  policy {r['method']}: "
                  f"{progress_line(r['finished'], r['update'], r['updates'], 'updates', r['seconds'], r.get('updated'))}")
    return 0


def harvest(root: Path, path: Path, preset: str | None = None) -> int:
    """Record what every work dir under ``root`` holds so far (finished or not) in ``path``."""
    records, trainings = [], []
    for workdir in work_dirs(root, preset):
        found = workdir_records(workdir, workdir_commit(workdir))
        records += found[0]
        trainings += found[1]
    merge_results(path, records, trainings)
    print(f"{path}: {len(trainings)} trainings and {len(records)} evaluations from {root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.noise_fraction <= 1.0:  # refused now, not at collect_target after the trainings
        parser.error(f"--noise-fraction must be in [0, 1], got {args.noise_fraction}")
    if args.clone_steps < 0:
        parser.error(f"--clone-steps must be 0 (skip the cloned reference) or more, got {args.clone_steps}")
    try:
        overrides = parse_set(args.overrides)
        pairs = pair_names(args.pairs)
    except (ValueError, KeyError) as exc:
        parser.error(str(exc))
    if args.status:
        return status(args.workdir, args.preset)
    if args.harvest:
        return harvest(args.workdir, args.results, args.preset)

    methods = tuple(m for m in METHODS if m in {*args.methods, "oracle"})
    for pair in pairs:
        returns = run_pair(args, parser, pair, methods, overrides)
        if returns is not None:
            summarise(args, pair, methods, returns, overrides)
    return 0


def run_pair(args, parser, pair: str, methods: tuple[str, ...], overrides: dict):
    """Every seed of one pair up to ``--until``; the returns by method (None before the results)."""
    from redraw.config import ConfigError

    returns: dict[str, list[float]] = {m: [] for m in methods}
    all_methods = methods
    points = [(p, seed) for p in (args.pretrain_seeds or [None]) for seed in args.seeds]
    data = "source_policy" if args.target_behaviour == "source_policy" else "expert"
    for pretrain, seed in points:
        workdir = args.workdir / pair / workdir_name(args.preset, seed, pretrain, data)
        try:
            shipped, methods = (None, all_methods) if pretrain is None else shipped_models(pair, pretrain, all_methods)
            prepare(workdir, args.preset, seed, args.target_transitions, args.target_behaviour, methods,
                    args.noise_fraction, overrides, pair, args.update_code, shipped)
        except (ConfigError, WorkdirError) as exc:  # e.g. a --set key that params.yaml does not have
            parser.error(str(exc))
        if args.until == "pretrain":
            print(f"== {pair} seed {seed}: source pretraining in {workdir}", flush=True)
            sh([sys.executable, "-m", "dvc", "repro", "pretrain"], workdir)
        elif args.until == "trainings" or args.jobs > 1 or methods != METHODS:
            print(f"== {pair} seed {seed}: independent stages side by side in {workdir}", flush=True)
            run_side_by_side(workdir, args.jobs, methods, trainings_only=args.until == "trainings")
        if args.until != "results":
            _, trainings = workdir_records(workdir, workdir_commit(workdir), methods)
            merge_results(args.results, [], trainings)
            for t in trainings:
                print(f"{pair} seed {seed} {t['training']}: final return {t['final_return']:.1f} at step {t['steps']}"
                      f" (learnt: {t['learned']}, threshold {t['threshold']})")
            continue
        print(f"== {pair} seed {seed}: dvc repro in {workdir}", flush=True)
        # the results stage reads every evaluation in reports/evaluate: with a subset of methods
        # it runs alone on the evaluations made above, so DVC does not bring in the others
        sh([sys.executable, "-m", "dvc", "repro", *(["--single-item"] if methods != METHODS else []), "results"],
           workdir)
        records, trainings = workdir_records(workdir, workdir_commit(workdir), methods)
        merge_results(args.results, records, trainings)
        results = json.loads((workdir / "reports/results.json").read_text())
        for m in methods:
            returns[m].append(results[f"{m}/return_mean"])
        print((workdir / "reports/results.md").read_text(), flush=True)
        if args.clone_steps:
            from redraw.agent.cloning import CloningConfig
            from redraw.experiments import bc_reference

            result, rows = bc_reference.run(workdir, args.results.with_name("bc_reference.json"),
                                            CloningConfig(steps=args.clone_steps))
            print(bc_reference.summary(workdir, result, rows), flush=True)
    return returns if args.until == "results" else None


def summarise(args, pair: str, methods: tuple[str, ...], returns: dict[str, list[float]], overrides: dict) -> None:
    methods = tuple(m for m in methods if returns[m])  # dreamer_finetune is left out where no RSSM is shipped
    oracle = float(np.mean(returns["oracle"]))
    print(f"\n# {pair}, {args.preset} preset, seeds {args.seeds}, target transitions "
          f"{args.target_transitions or 'as the preset'}, target data from "
          f"{describe_target(args.target_behaviour, args.noise_fraction)}"
          f"{''.join(f', {k}={v}' for k, v in overrides.items())}\n")
    print("| method | mean return over seeds | per seed | % of oracle |\n|---|---:|---|---:|")
    for m in methods:
        mean = float(np.mean(returns[m]))
        pct = f"{100 * mean / oracle:.0f}%" if oracle > 0 else "n/a"
        print(f"| {m} | {mean:.1f} | {', '.join(f'{r:.1f}' for r in returns[m])} | {pct} |")
    if "redraw" not in methods:
        print("\nthe paper's claims are about ReDRAW: add redraw to --methods to check them")
        return
    redraw = float(np.mean(returns["redraw"]))
    baselines = [m for m in ("no_adapt", "draw_finetune", "dreamer_finetune") if m in methods]
    beats = all(redraw > float(np.mean(returns[m])) for m in baselines)
    ratio = redraw / oracle if oracle > 0 else float("nan")
    left_out = sorted(set(METHODS) - set(methods))
    print(f"\nclaim 1, ReDRAW above every baseline{' run (not: ' + ', '.join(left_out) + ')' if left_out else ''}: "
          f"{'yes' if beats else 'no'}")
    if oracle > 0:
        print(f"claim 2, ReDRAW >= 80% of the oracle: {ratio:.0%} -> {'yes' if ratio >= 0.8 else 'no'}")
    else:
        print(f"claim 2, ReDRAW >= 80% of the oracle: undefined, the oracle's mean return is {oracle:.1f}")
    print("(one table per pair; docs/results.md, from `redraw report`, judges the claims on their intervals)")


if __name__ == "__main__":
    sys.exit(main())

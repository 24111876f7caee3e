"""Held-out dynamics error vs adaptation updates, per method and target-data size.

The paper's case for the residual: fine-tuning a world model on little target data overfits as
adaptation goes on, a latent residual on the frozen model does not. The reference adapts for as
long as the policy trains (up to millions of updates); the pipeline's ``calibrate`` stage stops
after ``calibrate.updates``. This benchmark runs the calibration far longer on the data of a
finished pipeline directory (its pretrained model and validated target data) and records the
held-out error every ``--gap-every`` updates: the 32-step open-loop latent KL on the target
episodes calibration never trains on, for each method at each target-data size.

    redraw experiment adaptation_length --workdir WORKDIR --methods redraw draw_finetune \\
        --transitions 40000 5000 10000 --updates 100000 --jobs 2
    redraw experiment adaptation_length --workdir WORKDIR --status      # each run's update and time left
    redraw experiment adaptation_length --workdir WORKDIR --harvest     # record stopped runs' curves so far
    redraw experiment adaptation_length --report        # docs/adaptation_length.md and its figure

Each run is the ``calibrate`` stage of this checkout (a copy of its ``src``, taken when the command
starts) in ``WORKDIR/adaptation_length/<run>/`` (the work dir's models and data linked, its params
with the run's settings), one thread per run,
``--jobs`` at a time. A stopped run resumes from its checkpoint when the same command runs
again, on the code it started with (``--update-code``: this checkout's); a finished one is not
run again. Every finished run is merged into
``benchmarks/results/adaptation_length.json`` (one record per pair, seed, preset, method,
target size and number of updates, with its held-out curve).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from redraw.experiments import provenance
from redraw.experiments.provenance import ROOT
from redraw.results_records import merge_keyed

RESULTS = ROOT / "benchmarks/results/adaptation_length.json"
REPORT = ROOT / "docs/adaptation_length.md"
FIGURES = ROOT / "docs/figures/adaptation_length"
#: the pretraining each method adapts (a file of the work dir)
PRETRAINED = {"redraw": "models/pretrain", "draw_finetune": "models/pretrain", "dreamer_finetune": "models/pretrain_rssm"}
COLORS = {"redraw": "C1", "draw_finetune": "C0", "dreamer_finetune": "C2"}  #: the same in every panel
KEY = ("pair", "seed", "preset", "method", "requested_transitions", "updates")


def commit() -> str:
    """This checkout's commit, ``+dirty`` with uncommitted changes to ``src`` (the code a run copies)."""
    return provenance.commit(ROOT, ("src",))


def check_workdir(workdir: Path, methods: list[str]) -> dict:
    """The work dir's params; ValueError names what a run would miss."""
    import yaml

    params_file = workdir / "params.yaml"
    if not params_file.is_file():
        raise ValueError(f"{params_file}: not a pipeline directory (no params.yaml)")
    params = yaml.safe_load(params_file.read_text())
    data = workdir / str(params.get("target_data", "data/target"))
    needs = [workdir / "reports/validation/result.json", data / "metadata.json",
             *(workdir / PRETRAINED[m] / "agent.pt" for m in methods)]
    missing = [str(p) for p in needs if not p.is_file()]
    if missing:
        raise ValueError(f"{workdir}: missing {', '.join(missing)}; run the pipeline there up to the target data's "
                         "validation and the pretraining(s) first (dreamer_finetune needs pretrain_rssm)")
    return params


def prepare_run(workdir: Path, params: dict, method: str, transitions: int, updates: int, gap_every: int) -> Path:
    """``WORKDIR/adaptation_length/<method>-<transitions>-<updates>``: the work dir's pretrained
    model, target data and validation linked, its params with this run's calibration settings."""
    import yaml

    run = workdir / "adaptation_length" / f"{method}-{transitions}-{updates}"
    for rel in (PRETRAINED[method], str(params.get("target_data", "data/target")), "reports/validation",
                "envs.yaml"):
        link = run / rel
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((workdir / rel).resolve())
    mine = json.loads(json.dumps(params))
    mine["target_transitions"] = transitions
    mine["calibrate"].update(updates=updates, gap_every=gap_every, early_stop=False)
    text = yaml.safe_dump(mine, sort_keys=False)
    params_file = run / "params.yaml"
    if not params_file.is_file() or params_file.read_text() != text:
        params_file.write_text(text)
    return run


def snapshot_code(workdir: Path, code: str) -> Path:
    """A copy of this checkout's ``src`` for the runs of this command: code edited while they run
    does not reach them, so every run is the commit its record names."""
    import shutil

    dest = workdir / "adaptation_length" / f"src-{code}"
    if not dest.is_dir():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(ROOT / "src", tmp, ignore=shutil.ignore_patterns("__pycache__"))
        os.replace(tmp, dest)
    return dest


def code_of(run: Path, method: str, code: str, src: Path, update_code: bool = False) -> tuple[str, Path]:
    """The code ``run`` goes on with, and its ``src``: a run stopped midway resumes on the code it
    started with (its CODE file, the work dir's snapshot of that commit), so that no curve mixes
    two codes; a run not started yet, or ``update_code``, takes ``code`` (``src``). ValueError
    where a stopped run's snapshot is gone."""
    from redraw.results_records import latest_checkpoint

    own = (run / "CODE").read_text().strip() if (run / "CODE").is_file() else None
    if update_code or own in (None, code) or latest_checkpoint(run, f"calibrate-{method}") is None:
        return code, src
    own_src = src.parent / f"src-{own}"
    if not own_src.is_dir():
        raise ValueError(f"{run}: stopped on the code of {own}, whose snapshot {own_src} is gone; --update-code "
                         f"resumes it on this checkout's code ({code}), its record then naming that")
    return own, own_src


def run_calibration(run: Path, method: str, src: Path) -> int:
    """The calibrate stage of the code in ``src`` in ``run`` (one thread); its log in ``run/calibrate.log``."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{(run / 'mlflow.db').resolve()}"}
    with open(run / "calibrate.log", "a") as log:
        return subprocess.run([sys.executable, "-m", "redraw.stages.calibrate", method, "--no-progress"],
                              cwd=run, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def finished(run: Path, method: str, updates: int) -> bool:
    metrics = run / f"reports/calibrate/{method}.json"
    return metrics.is_file() and json.loads(metrics.read_text()).get("calib/updates") == updates


def record(run: Path, workdir: Path, params: dict, method: str, transitions: int, updates: int,
           gap_every: int) -> dict | None:
    """The results record of ``run``: finished (its reports), or stopped (``"finished": false``,
    its held-out curve so far from its latest checkpoint); None before its first checkpoint."""
    from redraw.checkpoint import load_checkpoint
    from redraw.results_records import latest_checkpoint

    if finished(run, method, updates):
        metrics = json.loads((run / f"reports/calibrate/{method}.json").read_text())
        heldout = json.loads((run / f"reports/calibrate/{method}_heldout.json").read_text())
        done, seconds, train = updates, metrics["calib/seconds"], int(metrics["calib/train_transitions"])
    else:
        ckpt = latest_checkpoint(run, f"calibrate-{method}")
        if ckpt is None:
            return None
        state = load_checkpoint(ckpt)
        heldout, done, seconds, train = state["heldout"], int(state["update"]), round(state["seconds"], 1), None
    workdir_commit = (workdir / "COMMIT").read_text().strip() if (workdir / "COMMIT").is_file() else "unknown"
    return {"pair": params["env"]["target"], "seed": int(params["seed"]), "preset": params.get("preset"),
            "method": method, "requested_transitions": transitions, "train_transitions": train, "updates": updates,
            "finished": done == updates, "updates_done": done, "gap_every": gap_every,
            "gap_horizon": int(params["calibrate"]["gap_horizon"]), "seconds": seconds,
            "heldout": [[p["update"], round(p["kl_open_loop"], 4), round(p["kl_filter"], 4),
                         round(p["mse_open_loop"], 4)] for p in heldout],
            "commit": (run / "CODE").read_text().strip() if (run / "CODE").is_file() else "unknown",
            "pretraining_commit": workdir_commit}


def merge(path: Path, records: list[dict]) -> None:
    """Add ``records`` to the results file (a record of the same key replaces the old one; one run a line)."""
    merge_keyed(path, {None: (KEY, records)})


def summary_row(r: dict) -> str:
    points = r["heldout"]
    start, last = points[0], points[-1]
    low = min(points, key=lambda p: p[1])
    # one measurement is noisy (two held-out episodes): the last quarter's mean says where it settled
    tail = [p[1] for p in points if p[0] >= 0.75 * last[0] and p[0] > 0] or [last[1]]
    settled = sum(tail) / len(tail)
    size = f"{r['train_transitions']:,}" if r["train_transitions"] else f"~{r['requested_transitions']:,}"
    stopped = "" if r.get("finished", True) else f" (stopped at {r['updates_done']:,} of {r['updates']:,})"
    return (f"| {r['method']}{stopped} | {size} | {start[1]:.2f} | {low[1]:.2f} ({low[0]:,}) | "
            f"{settled:.2f} ({len(tail)}) | {last[1]:.2f} ({last[0]:,}) | {settled / low[1]:.2f} |")


def report(results: Path, out: Path, figures: Path) -> None:
    """``out`` (markdown) and one figure per pair, seed and preset from the results file."""
    from collections import defaultdict

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = json.loads(results.read_text()) if results.is_file() else []
    groups = defaultdict(list)
    for r in records:
        groups[(r["pair"], r["seed"], r["preset"])].append(r)
    lines = ["# Held-out dynamics error vs adaptation updates", "",
             f"Generated by `redraw experiment adaptation_length --report` from "
             f"`{os.path.relpath(results, ROOT)}` (do not edit by hand).", "",
             "Each run calibrates the pretrained model of one pipeline directory on its validated target data "
             "(the newest N transitions of the training episodes) far beyond the `calibrate` stage's "
             "schedule, measuring the open-loop latent KL over the horizon on the held-out target episodes (never "
             "trained on, the same for every size) every `--gap-every` updates. Overfitting shows as the "
             "error rising after its lowest point and staying there: the last column is the mean over the last "
             "quarter of the updates run divided by the lowest point (a single point is noisy: the held-out "
             "data are a few episodes).", ""]
    if not records:
        lines.append("No runs yet.")
    for (pair, seed, preset), rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        commits = sorted({r["commit"] for r in rs})
        lines += [f"## {pair}, seed {seed}, `{preset}` preset", "",
                  f"Calibration code {', '.join(commits)}; pretraining and target data of commit "
                  f"{', '.join(sorted({r['pretraining_commit'] for r in rs}))}.", "",
                  "| method | train transitions | held-out KL at 0 | lowest (update) | mean of the last quarter "
                  "(points) | last (update) | last quarter / lowest |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        rs = sorted(rs, key=lambda r: (r["requested_transitions"], r["method"], r["updates"]))
        lines += [summary_row(r) for r in rs]
        sizes = sorted({r["requested_transitions"] for r in rs})
        fig, axes = plt.subplots(1, len(sizes), figsize=(4.5 * len(sizes), 3.4), squeeze=False, sharey=True)
        for ax, size in zip(axes[0], sizes):
            for r in (r for r in rs if r["requested_transitions"] == size):
                xs, ys = [p[0] for p in r["heldout"]], [p[1] for p in r["heldout"]]
                ax.plot(xs, ys, label=r["method"] + ("" if r.get("finished", True) else " (stopped)"),
                        color=COLORS.get(r["method"]))
            ax.set_title(f"{size:,} target transitions")
            ax.set_xlabel("adaptation updates")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(f"held-out open-loop KL (h 1..{rs[0]['gap_horizon']})")
        for ax in axes[0]:
            ax.legend(fontsize=8)
        fig.suptitle(f"{pair}, seed {seed}")
        fig.tight_layout()
        name = f"{pair}-seed{seed}-{preset}.png"
        figures.mkdir(parents=True, exist_ok=True)
        fig.savefig(figures / name, dpi=90)
        plt.close(fig)
        lines += ["", f"![{pair} seed {seed}]({os.path.relpath(figures / name, out.parent)})", ""]
    out.write_text("\n".join(lines).rstrip() + "\n")
    print(f"{out}: {len(records)} runs")


def runs_of(workdir: Path) -> list[tuple[Path, str, int, int]]:
    """The runs under ``workdir/adaptation_length``: (directory, method, target size, updates)."""
    out = []
    for run in sorted((workdir / "adaptation_length").glob("*-*-*")):
        if (run / "params.yaml").is_file():
            method, transitions, updates = run.name.rsplit("-", 2)
            out.append((run, method, int(transitions), int(updates)))
    return out


def harvest(workdir: Path, results: Path) -> int:
    """Record every run of ``workdir`` so far, finished or stopped, in ``results``."""
    import yaml

    records = []
    for run, method, transitions, updates in runs_of(workdir):
        params = yaml.safe_load((run / "params.yaml").read_text())
        rec = record(run, workdir, params, method, transitions, updates, int(params["calibrate"]["gap_every"]))
        if rec is not None:
            records.append(rec)
    merge(results, records)
    print(f"{results}: {len(records)} runs from {workdir} ({sum(not r['finished'] for r in records)} unfinished)")
    return 0


def status(workdir: Path) -> int:
    """Print where each run under ``workdir/adaptation_length`` stands (writes nothing): finished,
    or its update of the total from its latest checkpoint, with the time left at its pace so far."""
    from redraw.checkpoint import load_checkpoint
    from redraw.results_records import latest_checkpoint, progress_line

    runs = runs_of(workdir)
    if not runs:
        print(f"{workdir}: no adaptation runs yet")
        return 0
    for run, method, _, updates in runs:
        metrics = run / f"reports/calibrate/{method}.json"
        ckpt = latest_checkpoint(run, f"calibrate-{method}")
        if finished(run, method, updates):
            m = json.loads(metrics.read_text())
            print(f"{run.name}: {progress_line(True, updates, updates, 'updates', m['calib/seconds'], None)}")
        elif ckpt is not None:
            state = load_checkpoint(ckpt)
            print(f"{run.name}: " + progress_line(False, int(state["update"]), updates, "updates", state["seconds"],
                                                  ckpt.stat().st_mtime))
        else:
            print(f"{run.name}: started, no checkpoint yet")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="a pipeline directory with its pretraining(s) and validated "
                        "target data (e.g. a work dir of `redraw experiment transfer_quality`)")
    parser.add_argument("--methods", nargs="+", choices=sorted(PRETRAINED), default=["redraw", "draw_finetune"])
    parser.add_argument("--transitions", type=int, nargs="+", default=[40000, 5000, 10000],
                        help="target-data sizes, run in this order (default: 40000 5000 10000)")
    parser.add_argument("--updates", type=int, default=100_000, help="adaptation updates per run (default 100000)")
    parser.add_argument("--gap-every", type=int, default=2000, help="held-out measurement every N updates")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each (default 2)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"results file (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--harvest", action="store_true", help="record every run of --workdir so far (stopped ones "
                        "from their checkpoints) in the results file, run nothing")
    parser.add_argument("--status", action="store_true", help="print where each run of --workdir stands, run nothing")
    parser.add_argument("--update-code", action="store_true",
                        help="resume stopped runs on this checkout's code (default: each on the code it started "
                        "with, from the work dir's snapshot of it)")
    parser.add_argument("--report", action="store_true", help="write docs/adaptation_length.md and its figures "
                        "from the results file, run nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.report:
        report(args.results, REPORT, FIGURES)
        return 0
    if args.workdir is None:
        parser.error("--workdir is needed to run (or --report)")
    if args.status:
        return status(args.workdir)
    if args.harvest:
        return harvest(args.workdir, args.results)
    if args.updates < 1 or args.gap_every < 1 or args.jobs < 1 or min(args.transitions) < 1:
        parser.error("--updates, --gap-every, --jobs and --transitions must be at least 1")
    try:
        params = check_workdir(args.workdir, args.methods)
    except ValueError as exc:
        parser.error(str(exc))
    code = commit()
    src = snapshot_code(args.workdir, code)
    runs = [(m, t) for t in args.transitions for m in args.methods]

    def one(item):
        method, transitions = item
        run = prepare_run(args.workdir, params, method, transitions, args.updates, args.gap_every)
        if not finished(run, method, args.updates):
            try:
                run_code, run_src = code_of(run, method, code, src, args.update_code)
            except ValueError as exc:
                print(exc, flush=True)
                return None
            print(f"{method} on {transitions:,} transitions: {args.updates:,} updates in {run}"
                  f"{'' if run_code == code else f', resuming on its own code of {run_code}'}", flush=True)
            (run / "CODE").write_text(run_code + "\n")
            rc = run_calibration(run, method, run_src)
            if rc != 0:
                print(f"{method} on {transitions:,} transitions failed (exit {rc}); see {run / 'calibrate.log'}",
                      flush=True)
                return None
        rec = record(run, args.workdir, params, method, transitions, args.updates, args.gap_every)
        merge(args.results, [rec])  # each run as it finishes: a stopped benchmark keeps what it measured
        print(f"{method} on {rec['train_transitions']:,} transitions: {summary_row(rec)}", flush=True)
        return rec

    with ThreadPoolExecutor(args.jobs) as pool:
        done = [r for r in pool.map(one, runs) if r is not None]
    print(f"{args.results}: {len(done)} of {len(runs)} runs finished")
    return 0 if len(done) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())

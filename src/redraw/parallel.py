"""``dvc repro`` with independent stages side by side (``redraw repro --jobs N``, ``make repro``).

``dvc repro`` runs one stage after another, and the updates at the CPU presets' sizes are
latency-bound: a training uses one core about as well as two. Here the stages of dvc.yaml are
taken level by level from DVC's own graph (a stage's level is the length of the longest chain of
stages it depends on, so the stages of one level never depend on each other). The stages of a
level that are not up to date run their dvc.yaml commands ``jobs`` at a time, the cores split
between them (``OMP_NUM_THREADS``), each with its output in a log; ``dvc commit`` then records
them in dvc.lock as ``dvc repro`` would have. A final ``dvc repro`` checks that everything is
up to date (and runs anything left). A stopped run resumes: finished stages are not run again,
and the trainings continue from their checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def venv_env(**extra: str) -> dict[str, str]:
    """This environment with the running interpreter's virtualenv first (the stages' scripts/py uses it)."""
    return dict(os.environ, VIRTUAL_ENV=sys.prefix, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra)


def dvc(args: list[str], root: Path) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=venv_env(), check=True)


def stage_levels(root: str | Path = ".") -> list[list[str]]:
    """Every stage of ``root``'s dvc.yaml by level: level 0 depends on no stage, level k on stages
    of lower levels only."""
    import networkx as nx
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        level: dict = {}
        for stage in reversed(list(nx.topological_sort(graph))):  # dependencies first
            level[stage] = 1 + max((level[d] for d in graph.successors(stage)), default=-1)
        out: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
        for stage, k in level.items():
            out[k].append(stage.addressing)
    return [sorted(names) for names in out]


def stale_stages(root: str | Path, targets: list[str] | tuple[str, ...]) -> dict[str, list[str]]:
    """The stages named by ``targets`` (stages or foreach groups, e.g. ``train_policy``) that are
    not up to date in dvc.lock: address -> command."""
    from dvc.repo import Repo

    stale = {}
    with contextlib.chdir(root), Repo(".") as repo:  # DVC resolves stage paths from the working directory
        for stage in (st for target in targets for st in repo.stage.collect(target)):
            status = repo.status(targets=[stage.addressing]).get(stage.addressing)
            if status:  # e.g. [{"changed deps": {"models/pretrain": "modified"}}, "changed command"]
                why = "; ".join(entry if isinstance(entry, str) else
                                "; ".join(f"{kind} ({len(paths)})" for kind, paths in entry.items()) for entry in status)
                print(f"   {stage.addressing}: not up to date ({why})", flush=True)
                stale[stage.addressing] = shlex.split(stage.cmd)
    return stale


#: stages that take longest at every preset's sizes, longest first: a level starts them before the
#: others, so that a short stage, not the longest, waits for a free core (the RSSM pretraining took
#: 271 s of make repro's 838 s at b7ae1f4, after pretrain and oracle, 121 s each)
LONGEST_FIRST = ("pretrain_rssm", "pretrain", "oracle", "train_policy@dreamer_finetune", "calibrate@dreamer_finetune")


def longest_first(names) -> list[str]:
    """``names`` with the stages of ``LONGEST_FIRST`` first, in its order; the rest as given."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    return sorted(names, key=lambda n: rank.get(n, len(rank)))


def side_by_side(root: Path, jobs: int, commands: dict[str, list[str]], log_dir: Path) -> None:
    """Run ``commands`` (name -> argv) ``jobs`` at a time in ``root``, the cores shared between
    them, each one's output in ``log_dir/<name>.log``, the longest known stages first; the first
    failure is raised (naming its log) once the others have finished."""
    jobs = max(1, min(jobs, len(commands)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    log_dir.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> None:
        log = log_dir / f"{name.replace('@', '-')}.log"
        print(f"Running stage '{name}' ({threads} thread(s)), log in {log}", flush=True)
        with open(log, "a") as fh:  # appended: a resumed stage keeps the earlier part of its log
            done = subprocess.run(commands[name], cwd=root, env=venv_env(OMP_NUM_THREADS=str(threads)),
                                  stdout=fh, stderr=subprocess.STDOUT)
        if done.returncode:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
            raise RuntimeError(f"stage {name} failed (exit {done.returncode}); its log {log} ends:\n{tail}")
        print(f"   {name}: done", flush=True)

    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(one, name) for name in longest_first(commands)]
    for future in futures:
        future.result()


def run_group(root: Path, jobs: int, targets: list[str] | tuple[str, ...], log_dir: Path) -> list[str]:
    """The stale stages among ``targets`` side by side, then recorded in dvc.lock; returns their names."""
    stale = stale_stages(root, targets)
    if len(stale) == 1 or jobs == 1:  # nothing to overlap: dvc repro runs and records it itself
        for name in stale:
            dvc(["repro", "--single-item", name], root)
    elif stale:
        side_by_side(root, jobs, stale, log_dir)
        dvc(["commit", "-f", "-q", *stale], root)
    return list(stale)


def repro(root: str | Path = ".", jobs: int = 2, log_dir: str | Path = "reports/logs") -> None:
    """The whole pipeline, the stages of each level ``jobs`` at a time, then ``dvc repro``."""
    root = Path(root)
    levels = stage_levels(root)
    for i, level in enumerate(levels):
        print(f"== level {i + 1}/{len(levels)}: {', '.join(level)}", flush=True)
        run_group(root, jobs, level, root / log_dir)
    dvc(["repro"], root)  # everything is recorded: this only confirms it (or runs what is left)

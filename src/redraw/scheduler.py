"""``dvc repro`` with independent stages side by side (``redraw repro --jobs N``, ``make repro``).

``dvc repro`` runs one stage after another, and the updates at the CPU presets' sizes are
latency-bound: a training uses one core about as well as two. Here each stage of dvc.yaml starts
as soon as the stages it needs (from DVC's own graph) are done, ``jobs`` at a time, the cores
split between them (``OMP_NUM_THREADS``), each with its output in a log; ``dvc commit`` records
each in dvc.lock when it finishes, as ``dvc repro`` would have. A final ``dvc repro`` checks
that everything is up to date (and runs anything left). A stopped run resumes: finished stages
are not run again, and the trainings continue from their checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path


def venv_env(**extra: str) -> dict[str, str]:
    """This environment with the running interpreter's virtualenv first (the stages' scripts/py uses it)."""
    return dict(os.environ, VIRTUAL_ENV=sys.prefix, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra)


def dvc(args: list[str], root: Path) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=venv_env(), check=True)


def stage_graph(root: str | Path = ".") -> dict[str, set[str]]:
    """Every stage of ``root``'s dvc.yaml (its address, e.g. ``calibrate@redraw``) -> the stages
    whose outputs it reads, from DVC's own graph."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        return {stage.addressing: {d.addressing for d in graph.successors(stage)} for stage in graph.nodes}


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


def commit(root: str | Path, name: str) -> None:
    """Record stage ``name``'s dependencies and outputs in dvc.lock (``dvc commit -f NAME``), in
    this process: a ``dvc`` process per stage cost ~1.3 s of imports each, during which no
    stage could start."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo:
        repo.commit(name, force=True)


def remove_outs(root: str | Path, name: str) -> None:
    """Remove stage ``name``'s outputs (not its ``persist: true`` ones) before it runs, as ``dvc
    repro`` does: a stage never finds its previous outputs in its way."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo, repo.lock:
        for stage in repo.stage.collect(name):
            stage.remove_outs(ignore_remove=False, force=False)


#: stages that take longest at every preset's sizes, longest first: when more stages are ready than
#: there are free jobs these start first, so that a short stage, not the longest, waits for a free
#: core (the RSSM pretraining took 271 s of make repro's 838 s at b7ae1f4, after pretrain and
#: oracle, 121 s each)
LONGEST_FIRST = ("pretrain_rssm", "pretrain", "oracle", "train_policy@dreamer_finetune", "calibrate@dreamer_finetune")


def longest_first(names) -> list[str]:
    """``names`` with the stages of ``LONGEST_FIRST`` first, in its order; the rest as given."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    return sorted(names, key=lambda n: rank.get(n, len(rank)))


def run_logged(root: Path, name: str, cmd: list[str], threads: int, log_dir: Path) -> None:
    """One stage's dvc.yaml command in ``root`` with ``threads`` threads, its output appended to
    ``log_dir/<name>.log``; a failure is raised with the end of that log."""
    log = log_dir / f"{name.replace('@', '-')}.log"
    print(f"Running stage '{name}' ({threads} thread(s)), log in {log}", flush=True)
    start = time.monotonic()
    with open(log, "a") as fh:  # appended: a resumed stage keeps the earlier part of its log
        done = subprocess.run(cmd, cwd=root, env=venv_env(OMP_NUM_THREADS=str(threads)),
                              stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise RuntimeError(f"stage {name} failed (exit {done.returncode}); its log {log} ends:\n{tail}")
    print(f"   {name}: done in {time.monotonic() - start:.0f} s", flush=True)


def upstream(needs: dict[str, set[str]], names) -> set[str]:
    """``names`` and every stage they need, directly or not."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(needs[name])
    return seen


def schedule(root: str | Path, jobs: int, log_dir: str | Path, targets=None, launch=None, first_done=None,
             single: bool = False) -> list[str]:
    """Bring the stages of ``root``'s dvc.yaml (or ``targets`` and what they need) up to date,
    each stage started as soon as the stages it needs are done, ``jobs`` at a time (the longest
    known first when more are ready than there are free jobs), the cores split between the jobs.

    A stage whose dependencies are all done is checked with DVC then: up to date, it counts as
    done without running; otherwise its outputs are removed as ``dvc repro`` removes them (not
    the persistent ones), its command runs (output in ``log_dir``) and ``dvc commit``
    records it in dvc.lock as soon as it finishes, so a stopped run resumes with what finished.
    Only this function talks to DVC, so its lock is never contended. On a failure no new stage
    starts, the running ones finish (and are recorded), and the failure is raised naming its log.
    Returns the stages that ran, in the order they finished. With ``single`` only ``targets``
    themselves are brought up to date, as ``dvc repro --single-item`` does: the stages they need
    that are not targets count as done whatever their state (a target still waits for another
    target it needs).

    ``launch(name, argv, threads)`` starts a stage and returns a future (``.result()`` raises its
    failure), ``first_done(futures)`` waits for at least one of them and returns those done:
    by default threads of this process (the Prefect flow passes its tasks instead)."""
    # absolute: the DVC calls below chdir this process into root while stage threads start processes there
    root = Path(root).resolve()
    log_dir = root / log_dir
    needs = stage_graph(root)
    if targets:
        unknown = sorted(set(targets) - set(needs))
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)} in {root / 'dvc.yaml'}")
    wanted = upstream(needs, targets or needs)
    if single and targets:
        wanted = set(targets)
        needs = {name: deps & wanted for name, deps in needs.items()}
    jobs = max(1, jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = None
    if launch is None:
        log_dir.mkdir(parents=True, exist_ok=True)
        pool = ThreadPoolExecutor(jobs)
        launch = lambda name, cmd, threads: pool.submit(run_logged, root, name, cmd, threads, log_dir)  # noqa: E731
    if first_done is None:  # concurrent.futures futures
        first_done = lambda futures: wait(futures, return_when=FIRST_COMPLETED)[0]  # noqa: E731
    done: set[str] = set()
    stale: dict[str, list[str]] = {}  # checked, waiting for a free job
    running: dict = {}  # future -> name
    ran: list[str] = []
    failures: list[BaseException] = []
    try:
        while True:
            ready = sorted(n for n in wanted - done - set(stale) - set(running.values()) if needs[n] <= done)
            if ready and not failures:
                found = stale_stages(root, ready)
                done.update(n for n in ready if n not in found)
                stale.update(found)
                if len(found) < len(ready):
                    continue  # stages up to date: what needs them may be ready now
            while stale and len(running) < jobs and not failures:
                name = longest_first(stale)[0]
                remove_outs(root, name)
                running[launch(name, stale.pop(name), threads)] = name
            if not running:
                break
            for future in first_done(list(running)):
                name = running.pop(future)
                try:
                    future.result()
                except Exception as exc:  # noqa: BLE001 - raised once the running stages have finished
                    failures.append(exc)
                    continue
                commit(root, name)
                done.add(name)
                ran.append(name)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if failures:
        raise failures[0]
    return ran


def repro(root: str | Path = ".", jobs: int = 2, log_dir: str | Path = "reports/logs") -> None:
    """The whole pipeline, each stage as soon as what it needs is done, ``jobs`` at a time, then
    ``dvc repro`` to confirm that everything is up to date."""
    root = Path(root)
    schedule(root, jobs, log_dir)
    dvc(["repro"], root)  # everything is recorded: this only confirms it (or runs what is left)

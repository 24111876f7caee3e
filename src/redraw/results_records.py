"""The results records that ``redraw report`` reads (``benchmarks/results/transfer_quality.json``),
made from a finished (or stopped) pipeline directory: by the quality benchmark for its work dirs,
and by the Prefect sweep for each point.

Two lists: ``records`` (one evaluation of one method, keyed by ``RECORD_KEY``) and ``trainings``
(one training of one pair and seed with its learning curve, keyed by ``TRAINING_KEY``). A method
whose starting training did not learn its task is recorded ``"valid": false``.

A run that starts from a shipped source pretraining (``pretrained.source`` in its params.yaml) records
which one as ``pretrain_seed`` (``pretrain_seed``): the nested protocol, source pretrainings x
adaptation seeds, whose runs are keyed by both. Older records have none. Its data settings are
named by ``regime``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from redraw.methods import REGISTRY, calibrated, names

#: the return (out of ~500: action repeat 2, the last sub-step's reward) a training's last
#: evaluation must reach for it to have learnt its task, by source env: the paper's four, where
#: the env-pair file sets none (read them through ``learned_threshold``)
LEARNED = {"pendulum-swingup": 300.0, "reacher-easy": 350.0, "cup-catch": 350.0, "finger-turn_hard": 200.0}
TRAININGS = ("pretrain", "oracle", "pretrain_rssm")
#: the methods a record holds: those evaluated on the target (redraw.methods), in the results table's order
METHODS = names(lambda m: m.env == "env.target")
#: the training each method's policy starts from (default: the source pretraining)
STARTS_FROM = {m.name: m.starts_from for m in REGISTRY.values() if m.starts_from != "pretrain"}
RECORD_KEY = ("pair", "seed", "method", "target_transitions", "protocol", "target_data", "preset", "variant",
              "pretrain_seed", "round")
TRAINING_KEY = ("pair", "seed", "training", "preset", "variant", "pretrain_seed")
#: a work dir's variant: the params.yaml overrides it ran with beyond the benchmark's settings
#: (``redraw experiment transfer_quality --set``), one ``key=value`` per line; a record without one has no variant
VARIANT_FILE = "VARIANT"


def learned_threshold(source: str, pairs=None) -> float | None:
    """The return a training's last evaluation must reach for it to have learnt its task, for
    source env ``source``: its ``learned:`` in the env-pair file ``pairs`` (a path, a registry,
    None: the repository's envs.yaml), else ``LEARNED``; None where neither has one."""
    from redraw.envs.registry import load_pairs

    spec = load_pairs(pairs).envs.get(source)
    if spec is not None and spec.learned is not None:
        return spec.learned
    return LEARNED.get(source)


def load_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())


def protocol(params: dict) -> str:
    """The adaptation schedule: ``sequential`` (calibrate for calibrate.updates, then train the
    policy on the frozen model) or ``concurrent`` (train_policy.adapt: calibration goes on beside
    the policy, the reference's schedule); ``+early_stop``: the calibration kept is the held-out
    best one (calibrate.early_stop)."""
    name = "concurrent" if params["train_policy"].get("adapt") else "sequential"
    return name + ("+early_stop" if params["calibrate"].get("early_stop") else "")


def target_data(params: dict) -> str:
    """Who collected the target data: ``expert`` (the oracle's sampled actions, the paper's data;
    ``expert+noise<f>`` with a share f of correlated-noise episodes), ``source_policy``, or the
    behaviour's kind (``correlated``, ``random``); ``external`` for imported data."""
    if str(params.get("target_data", "data/target")) != "data/target":
        return "external"
    b = params["collect_target"]["behaviour"]
    if b.get("kind") != "policy":
        return str(b.get("kind"))
    who = "expert" if "oracle" in str(b.get("checkpoint", "")) else "source_policy"
    f = float(b.get("noise_fraction", 0.0) or 0.0)
    return who + (f"+noise{f:g}" if f else "")


def pretrain_seed(params: dict) -> int | None:
    """Which shipped source pretraining a run starts from: K of ``pretrained.source``'s
    ``PAIR/source-K``; None where it trains its own (``''`` or no ``pretrained`` section)."""
    name = str((params.get("pretrained") or {}).get("source") or "")
    if not name:
        return None
    found = re.fullmatch(r"[^/]+/source-(\d+)", name)
    if found is None:
        raise ValueError(f"pretrained.source: {name!r} is not a shipped source pretraining's name (PAIR/source-K)")
    return int(found.group(1))


#: the nested protocol's data regimes (``regime``): name -> (target data, target transitions,
#: calibrate-again rounds, what it stands for)
REGIMES = {
    "a": ("expert", 40000, 0, "the paper's: 40,000 transitions of the expert's sampled actions"),
    "b": ("source_policy", 40000, 0,
          "what a robot team has first: 40,000 transitions of the source policy on the target"),
    "c": ("expert", 5000, 0, "low data: 5,000 transitions of the expert's"),
    "d-a": ("expert", 40000, 1, "(a) plus one deploy, log, calibrate-again round"),
    "d-b": ("source_policy", 40000, 1, "(b) plus one deploy, log, calibrate-again round"),
}


def regime(record: dict) -> str | None:
    """The data regime (a key of ``REGIMES``) a record was measured in, from its ``target_data``,
    ``target_transitions`` and ``round`` (absent or 0: no calibrate-again round; a later round is
    (d) on top of its base regime); None for any other setting."""
    rounds = record.get("round") or 0
    for name, (data, transitions, rnd, _) in REGIMES.items():
        if (record.get("target_data"), record.get("target_transitions")) == (data, transitions) \
                and min(rounds, 1) == rnd:
            return name
    return None


def latest_checkpoint(workdir: Path, training: str) -> Path | None:
    """The most recently written stage checkpoint of ``training`` in ``workdir``'s ``checkpoints/``."""
    ckpts = sorted(Path(workdir).glob(f"checkpoints/{training}-*/checkpoint.pt"), key=lambda f: f.stat().st_mtime)
    return ckpts[-1] if ckpts else None


def training_records(workdir: Path, pair: str, source: str, seed: int, preset: str, commit: str,
                     pairs=None) -> list[dict]:
    """One record per training of ``workdir``: its learning curve from the finished stage's curve
    file, or, while it runs or after it was stopped, from its latest stage checkpoint
    (``"finished": false``, and not judged: ``learned`` is null until it finishes). The threshold
    is ``learned_threshold(source, pairs)`` (``pairs``: the work dir's env-pair file)."""
    from redraw.checkpoint import load_checkpoint

    workdir = Path(workdir)
    threshold = learned_threshold(source, pairs)
    # how many episodes a last evaluation ran, for curves older than their "episodes" key
    params_file = workdir / "params.yaml"
    params = load_yaml(params_file) if params_file.is_file() else {}
    default_episodes = (params.get("pretrain") or {}).get("eval_episodes")
    shipped = pretrain_seed(params)
    records = []
    for name in TRAININGS:
        curve_file = workdir / f"reports/{name}_curve.json"
        finished = curve_file.is_file()
        curve = json.loads(curve_file.read_text()) if finished else None
        if curve is None:
            ckpt = latest_checkpoint(workdir, name)
            if ckpt is None:
                continue
            curve = load_checkpoint(ckpt)["curve"]
        if not curve:
            continue
        final = float(curve[-1]["eval_return"])
        episodes = curve[-1].get("episodes") or default_episodes
        records.append({
            "pair": pair, "seed": seed, "pretrain_seed": shipped, "training": name, "preset": preset,
            "env": pair if name == "oracle" else source, "finished": finished,
            "steps": int(curve[-1]["step"]), "final_return": final,
            **({"final_episodes": int(episodes)} if episodes else {}), "threshold": threshold,
            "learned": None if threshold is None or not finished else bool(final >= threshold),
            "curve": [[int(c["step"]), round(float(c["eval_return"]), 2)] for c in curve],
            "commit": commit,
        })
    return records


def training_progress(workdir: Path) -> list[dict]:
    """Where each training of ``workdir`` stands, for a progress view: ``step`` of ``steps``
    (the stage's target), ``seconds`` of training so far (every process of a resumed run),
    ``last_eval`` as ``[step, return]`` or None, ``finished``, and for an unfinished one
    ``updated``, the time (epoch seconds) its latest checkpoint was written. A training that has
    neither finished nor written a checkpoint is left out (it has not started)."""
    from redraw.checkpoint import load_checkpoint

    workdir = Path(workdir)
    out = []
    for name in TRAININGS:
        curve_file, metrics_file = workdir / f"reports/{name}_curve.json", workdir / f"reports/{name}.json"
        if curve_file.is_file() and metrics_file.is_file():
            curve = json.loads(curve_file.read_text())
            metrics = json.loads(metrics_file.read_text())
            step = int(curve[-1]["step"]) if curve else 0
            row = {"training": name, "finished": True, "step": step, "steps": step,
                   "seconds": float(metrics.get("train/seconds", 0.0))}
        else:
            ckpt = latest_checkpoint(workdir, name)
            if ckpt is None:
                continue
            state = load_checkpoint(ckpt)
            curve = state["curve"]
            # the target length: the checkpoint's own, else (older checkpoints) the identity's or the params'
            steps = state.get("steps") or state["identity"].get("pretrain", {}).get("steps") \
                or load_yaml(workdir / "params.yaml").get("pretrain", {}).get("steps", 0)
            row = {"training": name, "finished": False, "step": int(state["step"]),
                   "steps": int(steps), "seconds": float(state.get("seconds", 0.0)),
                   "updated": ckpt.stat().st_mtime}
        row["last_eval"] = [int(curve[-1]["step"]), float(curve[-1]["eval_return"])] if curve else None
        out.append(row)
    return out


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def progress_line(finished: bool, done: int, total: int, unit: str, seconds: float, updated: float | None,
                  note: str = "") -> str:
    """``finished, N steps in T[, note]`` or ``N / M steps, T trained, ~T left at its pace so far[,
    note]; checkpoint written T ago`` (the pace: its training seconds per step so far; ``updated``:
    when its latest checkpoint was written, epoch seconds)."""
    import time

    note = f", {note}" if note else ""
    if finished:
        return f"finished, {done:,} {unit} in {hours(seconds)}{note}"
    pace = seconds / done if done and seconds else None
    left = f", ~{hours(pace * (total - done))} left at its pace so far" if pace else ""
    return (f"{done:,} / {total:,} {unit}, {hours(seconds)} trained{left}{note}; "
            f"checkpoint written {hours(max(0.0, time.time() - updated))} ago")


#: the methods with a policy stage (train_policy@METHOD)
POLICY_METHODS = calibrated()


def policy_progress(workdir: Path) -> list[dict]:
    """Where each policy stage of ``workdir`` stands: ``update`` of ``updates``, ``seconds`` of
    training (every process of a resumed run), ``finished``, and for an unfinished one ``updated``,
    the time its latest checkpoint was written. A stage with neither is left out."""
    from redraw.checkpoint import load_checkpoint

    workdir = Path(workdir)
    out = []
    for method in POLICY_METHODS:
        report = workdir / f"reports/train_policy/{method}.json"
        ckpt = latest_checkpoint(workdir, f"policy-{method}")
        if report.is_file() and (ckpt is None or report.stat().st_mtime >= ckpt.stat().st_mtime):
            metrics = json.loads(report.read_text())
            updates = int(metrics.get("policy/updates", 0))
            out.append({"method": method, "finished": True, "update": updates, "updates": updates,
                        "seconds": float(metrics.get("policy/seconds", 0.0))})
        elif ckpt is not None:
            state = load_checkpoint(ckpt)
            out.append({"method": method, "finished": False, "update": int(state["update"]),
                        "updates": int(state["identity"]["train_policy"]["updates"]),
                        "seconds": float(state["seconds"]), "updated": ckpt.stat().st_mtime})
    return out


#: a record's curves: (key, the report file relative to the work dir, its x and y fields)
CURVES = (
    ("policy_curve", "reports/train_policy/{method}_curve.json", "update", "eval_return"),
    ("heldout", "reports/calibrate/{method}_heldout.json", "update", "kl_open_loop"),
    ("adapt_heldout", "reports/train_policy/{method}_heldout.json", "update", "kl_open_loop"),
)


def method_curves(workdir: Path, method: str) -> dict[str, list[list]]:
    """The curves of ``method``'s run in ``workdir`` that exist, as [[x, y], ...]: ``policy_curve``
    (target return vs policy updates, train_policy.eval_every), ``heldout`` (held-out open-loop
    KL vs calibration updates, calibrate.gap_every) and ``adapt_heldout`` (the same during the
    policy stage, where adaptation goes on beside it: the concurrent protocol)."""
    out = {}
    for key, rel, x, y in CURVES:
        file = Path(workdir) / rel.format(method=method)
        rows = json.loads(file.read_text()) if file.is_file() else []
        if rows:
            out[key] = [[int(r[x]), round(float(r[y]), 4)] for r in rows]
    return out


def target_size(params: dict) -> int:
    """The target transitions the methods train on: ``target_transitions``, or all collected."""
    return int(params.get("target_transitions") or 0) or int(params["collect_target"]["transitions"])


def method_records(workdir: Path, pair: str, seed: int, preset: str, trainings: list[dict], commit: str,
                   methods=METHODS) -> list[dict]:
    """One record per evaluated method of ``workdir`` (``reports/evaluate/<method>.json``) with its
    curves (``method_curves``); the protocol, target data and size, and the shipped source
    pretraining it started from (``pretrain_seed``), come from its params.yaml."""
    workdir = Path(workdir)
    params = load_yaml(workdir / "params.yaml")
    learned = {t["training"]: t["learned"] for t in trainings if t["finished"]}
    used = target_size(params)
    shipped = pretrain_seed(params)
    records = []
    for method in methods:
        file = workdir / "reports/evaluate" / f"{method}.json"
        if not file.is_file():
            continue
        ev = json.loads(file.read_text())
        records.append({
            "pair": pair, "seed": seed, "pretrain_seed": shipped, "method": method, "target_transitions": used,
            "protocol": protocol(params), "target_data": target_data(params),
            "return_mean": float(ev["return_mean"]), "return_std": float(ev["return_std"]),
            "episodes": int(ev["episodes"]), "preset": preset,
            "valid": learned.get(STARTS_FROM.get(method, "pretrain")), "commit": commit,
            **method_curves(workdir, method),
        })
    return records


def workdir_variant(workdir: Path) -> str:
    """The variant ``workdir`` last ran (``VARIANT_FILE``: its overrides, joined by ", "); "" for none."""
    file = Path(workdir) / VARIANT_FILE
    lines = file.read_text().split("\n") if file.is_file() else []
    return ", ".join(line.strip() for line in lines if line.strip())


def workdir_records(workdir: Path, commit: str, methods=METHODS) -> tuple[list[dict], list[dict]]:
    """(records, trainings) of a pipeline directory, its pair, seed and preset from its params.yaml;
    each carries the work dir's ``variant`` where it has one."""
    from redraw.envs.registry import load_pairs

    workdir = Path(workdir)
    params = load_yaml(workdir / "params.yaml")
    env = params["env"]
    pair, source, seed, preset = env["target"], env["source"], int(params["seed"]), str(params.get("preset"))
    registry = load_pairs(workdir / env.get("pairs", "envs.yaml"))
    registry.source_of(pair)  # KeyError: not a target there
    trainings = training_records(workdir, pair, source, seed, preset, commit, registry)
    records = method_records(workdir, pair, seed, preset, trainings, commit, methods)
    variant = workdir_variant(workdir)
    if variant:
        for rec in [*records, *trainings]:
            rec["variant"] = variant
    return records, trainings


#: a cloned-reference record's key (redraw.experiments.bc_reference, the sweep's clone_steps, whose
#: points of one pair and seed differ in their target data's size; a nested run's also in its
#: pretrain seed, and a calibrate-again round's in its round)
CLONE_KEY = ("pair", "seed", "preset", "target_data", "target_transitions", "reference", "method", "pretrain_seed",
             "round")


def merge_keyed(path: Path, sections: dict[str | None, tuple[tuple[str, ...], list[dict]]]) -> None:
    """Merge rows into a JSON results file: ``sections`` maps a section of the file (``None``: the
    file is one list) to the key fields of its rows and the new rows; a row replaces the one with
    its key, the others are kept, each section sorted by key. Benchmarks finishing at once (two
    processes, or threads of one) merge one after the other under a lock file beside ``path``; the
    file is replaced atomically, one row per line, so a reader never sees half of it."""
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(f".{path.name}.lock"), timeout=600):
        old = json.loads(path.read_text()) if path.is_file() else None
        merged = {}
        for section, (key, new) in sections.items():
            before = old if section is None else (old or {}).get(section, [])
            rows = {tuple(r.get(k) for k in key): r for r in before or []}
            rows.update({tuple(r.get(k) for k in key): r for r in new})
            merged[section] = sorted(rows.values(), key=lambda r: tuple(str(r.get(k)) for k in key))
        if None in merged:
            if len(merged) > 1:
                raise ValueError(f"{path}: a file is either one list or sections, not both")
            body = "[" + ",".join(f"\n{json.dumps(r)}" for r in merged[None]) + "\n]\n"
        else:
            if isinstance(old, dict):  # sections this merge does not touch are kept as they are
                merged = {**{k: v for k, v in old.items() if k not in merged}, **merged}
            body = "{" + ",\n".join(f'"{section}": [' + ",".join(f"\n  {json.dumps(r)}" for r in rows)
                                    + ("\n]" if rows else "]") for section, rows in merged.items()) + "}\n"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(body)
        tmp.replace(path)


def merge_results(path: Path, records: list[dict], trainings: list[dict]) -> None:
    """Merge evaluations and trainings into the quality benchmark's results file (``merge_keyed``)."""
    merge_keyed(path, {"records": (RECORD_KEY, records), "trainings": (TRAINING_KEY, trainings)})

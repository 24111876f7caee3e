"""The results report (``redraw report``): docs/results.md and its figures, built from the quality
benchmark's ``benchmarks/results/transfer_quality.json`` and nothing else.

The file holds two lists (``redraw experiment transfer_quality`` writes them):

- ``records``: one evaluation of one method, keyed by (pair, seed, method, target_transitions,
  protocol, target_data, preset), with ``return_mean``, ``return_std`` and ``episodes``, and
  ``valid``: whether the training the method starts from learnt its task (false: the point is
  void and never averaged in; null: not recorded).
- ``trainings``: one training (pretrain, oracle, pretrain_rssm) of one (pair, seed), with its
  learning curve, whether it finished, and whether its last evaluation reached ``threshold``.

For every setting (preset, target data, protocol, target transitions) and pair the report gives
each method's mean over seeds with a 95% Student-t interval, its share of the oracle, and the
paper's two claims checked on the per-seed differences (paired: a seed shares its pretraining):
ReDRAW above every baseline, and ReDRAW at least 80% of the oracle. A claim is "yes" or "no"
only where the interval excludes the line; otherwise "undecided".

Records with a ``pretrain_seed`` are the nested protocol's (shipped source pretrainings x
adaptation seeds; a run is one pretrain seed and one seed): they get sections of their own, one per
protocol (and preset, variant), and are never pooled with the records without one. In each data
regime (``redraw.results_records.regime``) returns are scored as a % of the expert's (the oracle's mean
return on that pair); across pairs and runs the report gives rliable's IQM with stratified
bootstrap intervals, the probability that ReDRAW improves on each other method and performance
profiles; per pair, ReDRAW's paired difference (by pretrain seed and seed) from each method with a
95% Student-t interval. A comparison is decided where the interval of the difference excludes 0,
or lies within ±``EQUAL_MARGIN``% of the expert's return (the two equal). The cloned references
(``bc``, ``bc_top50``) come from the ``bc_reference.json`` beside the results, matched by pair,
preset, target data and size, pretrain seed and seed.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from redraw.methods import REGISTRY, baselines, comparison_order, names
from redraw.results_records import RECORD_KEY, REGIMES, TRAINING_KEY, TRAININGS, regime
from redraw.stats import interval

__all__ = ["ResultsError", "load_results", "mean_ci", "build_report"]

RECORD_FIELDS = {"pair": str, "seed": int, "method": str, "target_transitions": int, "protocol": str,
                 "return_mean": float, "return_std": float, "episodes": int, "preset": str, "commit": str}
TRAINING_FIELDS = {"pair": str, "seed": int, "training": str, "preset": str, "finished": bool,
                   "steps": int, "final_return": float, "curve": list}
PAIRS = ("pendulum-swingup-reversed", "reacher-easy-reversed", "cup-catch-windy", "finger-turn_hard-torque")
SEEDS = (0, 1, 2)
ORACLE_SHARE = 0.8  #: the paper's claim: ReDRAW reaches at least this share of the oracle's return
CURVE_KEYS = ("policy_curve", "heldout", "adapt_heldout")  #: a record's optional curves (redraw.results_records.CURVES)
#: what a nested-protocol record (one with a pretrain_seed) must hold beyond RECORD_FIELDS
NESTED_FIELDS = {"target_data": str, "pretrain_seed": int}
CLONING = ("bc", "bc_top50")  #: the cloned references (bc_reference.json's ``reference``)
EQUAL_MARGIN = 10.0  #: two methods are equal where their difference's interval lies within ± this % of the expert
#: what the nested protocol plans per regime: (pairs, valid runs per pair)
NESTED_PLAN = {"a": (4, 10), "b": (4, 5), "c": (2, 5), "d-a": (2, 5), "d-b": (2, 5)}


class ResultsError(ValueError):
    """A results file or one of its records is not what the report can use."""


# The methods, read from the registry (redraw.methods) each time: its order is the results table's
def _methods() -> tuple[str, ...]:
    """The methods a record may hold: those evaluated on the target (``redraw.results_records.METHODS``)."""
    return names(lambda m: m.env == "env.target")


def _main_methods() -> tuple[str, ...]:
    """The paper's comparison (the other methods are beyond it, run on request)."""
    return names(lambda m: m.paper and m.env == "env.target")


def _nested_methods() -> tuple[str, ...]:
    """The nested comparison's methods: ReDRAW first, the cloned references, the expert ("oracle") last."""
    return (*comparison_order(), *CLONING, *(m for m in _methods() if REGISTRY[m].role == "reference"))


def _questions() -> tuple[str, ...]:
    """Does ReDRAW beat each of these?"""
    return (*(m for m in comparison_order() if m in baselines()), *CLONING)


def _name(rec: dict, key: tuple[str, ...]) -> str:
    """A record named by the fields of ``key`` it has (pair, seed and method first)."""
    first = ("pair", "seed", "method", "training")
    return ", ".join(f"{k}={rec[k]!r}" for k in dict.fromkeys((*first, *key)) if rec.get(k) is not None)


def _check(path: Path, section: str, i: int, rec, fields: dict, key: tuple[str, ...] = (),
           kind: str | None = None) -> None:
    """Refuse ``rec`` (``section[i]`` of ``path``) unless it has ``fields`` of their types, finite
    numbers and (``kind``, default ``section``: "records", "trainings" or "paired", a record of a
    ``PAIRED`` file) a known method or training; a nested-protocol record (one with a
    pretrain_seed) also its regime. The error names the record by its ``key`` fields."""
    if not isinstance(rec, dict):
        raise ResultsError(f"{path}: {section}[{i}] is not an object")
    kind = kind or section
    key = key or {"records": RECORD_KEY, "trainings": TRAINING_KEY}.get(kind, ())
    where = f"{path}: {section}[{i}] ({_name(rec, key)})"
    for field, want in fields.items():
        if field not in rec:
            raise ResultsError(f"{where}: missing field {field!r}")
        value = rec[field]
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise ResultsError(f"{where}: {field} must be {want.__name__}, got {value!r}")
        if want is float and not math.isfinite(value):
            raise ResultsError(f"{where}: {field} is not finite ({value!r})")
    for field in CURVE_KEYS if kind == "records" else ():
        if field in rec:
            curve = rec[field]
            good = isinstance(curve, list) and all(
                isinstance(pt, list) and len(pt) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pt)
                for pt in curve)
            if not good:
                raise ResultsError(f"{where}: {field} must be a list of finite [x, y] pairs, got {str(curve)[:120]}")
    if kind in ("records", "paired") and rec["method"] not in _methods():
        raise ResultsError(f"{where}: unknown method {rec['method']!r}; methods: {', '.join(_methods())}")
    if kind == "records" and rec.get("valid") not in (True, False, None):
        raise ResultsError(f"{where}: valid must be true, false or null, got {rec.get('valid')!r}")
    if kind == "trainings" and rec["training"] not in TRAININGS:
        raise ResultsError(f"{where}: unknown training {rec['training']!r}; trainings: {', '.join(TRAININGS)}")
    if rec.get("pretrain_seed") is not None:
        _check_nested(where, rec, kind)


def _check_nested(where: str, rec: dict, kind: str) -> None:
    """A nested-protocol record (one with a pretrain_seed): its fields and, for an evaluation, its
    data regime."""
    fields = NESTED_FIELDS if kind == "records" else {"pretrain_seed": int}
    for field, want in fields.items():
        if field not in rec:
            raise ResultsError(f"{where}: missing field {field!r}")
        if not isinstance(rec[field], want) or isinstance(rec[field], bool):
            raise ResultsError(f"{where}: {field} must be {want.__name__}, got {rec[field]!r}")
    if kind != "records":
        return
    if "valid" not in rec:
        raise ResultsError(f"{where}: missing field 'valid'")
    rnd = rec.get("round")
    if rnd is not None and (not isinstance(rnd, int) or isinstance(rnd, bool) or rnd < 0):
        raise ResultsError(f"{where}: round must be an integer >= 0, got {rnd!r}")
    if regime(rec) is None:
        known = "; ".join(f"{k}: {d} x {n:,}{' after a calibrate-again round' if r else ''}"
                          for k, (d, n, r, _) in REGIMES.items())
        raise ResultsError(f"{where}: unknown regime (target_data {rec['target_data']!r}, target_transitions "
                           f"{rec['target_transitions']}, round {rnd or 0}); regimes: {known}")


def load_results(path: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(records, trainings) of a results file; ResultsError names the file and the bad record."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: no results file (redraw experiment transfer_quality writes it)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("records", []), list) \
            or not isinstance(data.get("trainings", []), list):
        raise ResultsError(f"{path}: expected an object with lists 'records' and 'trainings'")
    records, trainings = data.get("records", []), data.get("trainings", [])
    for i, rec in enumerate(records):
        _check(path, "records", i, rec, RECORD_FIELDS)
    for i, rec in enumerate(trainings):
        _check(path, "trainings", i, rec, TRAINING_FIELDS)
    return records, trainings


def mean_ci(values) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (``redraw.stats.summarise``; nan with
    fewer than two values: one seed gives no interval)."""
    values = [float(v) for v in values]
    if not values:
        return float("nan"), float("nan")
    from redraw.stats import summarise

    s = summarise(values)
    return s["return_mean"], (s["return_ci_high"] - s["return_mean"]) if len(values) > 1 else float("nan")


def _verdict(mean: float, half: float, line: float, n: int) -> str:
    if n == 0 or not math.isfinite(mean):
        return "no data"
    if not math.isfinite(half):
        return "undecided (one seed)"
    if mean - half > line:
        return "yes"
    if mean + half < line:
        return "no"
    return "undecided"


def _fmt(mean: float, half: float) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.1f}" if not math.isfinite(half) else f"{mean:.1f} ± {half:.1f}"


def _setting_name(key: tuple) -> str:
    preset, data, protocol, transitions, variant, nested = key
    return (f"preset `{preset}`, target data `{data}`, protocol `{protocol}`, {transitions:,} target transitions"
            + (f", variant `{variant}`" if variant else "") + (f", {nested}" if nested else ""))


def _file_name(name: str) -> str:
    """A figure's file name: a variant's ``key=value`` and the protocol's ``+`` made safe."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _setting(r: dict) -> tuple:
    """What a record was measured under: preset, target data, protocol, target transitions, variant,
    and for a nested-protocol record its regime (records without a pretrain seed: "")."""
    nested = f"nested protocol, regime ({regime(r)})" if r.get("pretrain_seed") is not None else ""
    return (r["preset"], r.get("target_data", "?"), r["protocol"], r["target_transitions"], r.get("variant") or "",
            nested)


def _run(r: dict):
    """A record's run: its seed, or for a nested-protocol record ``pretrain seed/seed``."""
    return r["seed"] if r.get("pretrain_seed") is None else f"{r['pretrain_seed']}/{r['seed']}"


def _run_order(r: dict) -> tuple:
    return (-1 if r.get("pretrain_seed") is None else r["pretrain_seed"], r["seed"])


#: the reference without a world model (redraw.experiments.bc_reference), as its row is named
CLONED = "cloned, no world model (reference)"


def _cloned_returns(path: Path) -> dict[tuple, dict[int, float]]:
    """The cloned reference's return per seed, by (pair, preset, target data, target transitions),
    from the bc_reference.json beside the results (every record of a seed holds the same one; the
    file's records are checked by its own section first)."""
    if not path.is_file():
        return {}
    out: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in json.loads(path.read_text())["records"]:
        if r["reference"] == "bc" and r.get("pretrain_seed") is None:  # every episode cloned (not a filtered variant)
            out[(r["pair"], r["preset"], r["target_data"], r["target_transitions"])][r["seed"]] = \
                r["cloned"]["return_mean"]
    return out


def _pair_section(pair: str, recs: list[dict], figures: Path, rel: str, tag: str,
                  cloned: dict[int, float] | None = None) -> list[str]:
    by_method: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in recs:
        by_method[r["method"]][r["seed"]] = r
    oracle = {s: r["return_mean"] for s, r in by_method.get("oracle", {}).items() if r.get("valid") is not False}
    lines = [f"#### {pair}", "",
             "| method | seeds | return (mean ± 95% CI over seeds) | per seed | % of oracle |",
             "|---|---:|---:|---|---:|"]
    bars = []
    for method in _methods():
        seeds = by_method.get(method)
        if not seeds:
            continue
        valid = {s: r for s, r in seeds.items() if r.get("valid") is not False}
        void = sorted(s for s in seeds if s not in valid)
        mean, half = mean_ci([r["return_mean"] for r in valid.values()])
        shared = [s for s in valid if s in oracle and oracle[s] > 0]
        share = np.mean([valid[s]["return_mean"] / oracle[s] for s in shared]) if shared else float("nan")
        per_seed = ", ".join(f"{s}: {r['return_mean']:.1f}" + (" (void)" if s in void else "")
                             + (" (unverified)" if r.get("valid") is None else "")
                             for s, r in sorted(seeds.items()))
        pct = f"{100 * share:.0f}%" if math.isfinite(share) else "–"
        lines.append(f"| {method} | {len(valid)}{f' (+{len(void)} void)' if void else ''} | {_fmt(mean, half)} | "
                     f"{per_seed} | {pct} |")
        if valid:
            h = half if math.isfinite(half) else 0.0
            bars.append({"method": method, "mean": mean, "ci_low": mean - h, "ci_high": mean + h,
                         "reference": method == "oracle"})
    if cloned:
        mean, half = mean_ci(list(cloned.values()))
        shared = [s for s in cloned if s in oracle and oracle[s] > 0]
        pct = f"{100 * np.mean([cloned[s] / oracle[s] for s in shared]):.0f}%" if shared else "–"
        lines.append(f"| {CLONED} | {len(cloned)} | {_fmt(mean, half)} | "
                     + ", ".join(f"{s}: {v:.1f}" for s, v in sorted(cloned.items())) + f" | {pct} |")
        h = half if math.isfinite(half) else 0.0
        bars.append({"method": "cloned", "mean": mean, "ci_low": mean - h, "ci_high": mean + h, "reference": True})
    counts = defaultdict(set)  # test episodes per evaluation -> the seeds evaluated on that many
    for r in recs:
        counts[r["episodes"]].add(r["seed"])
    if len(counts) > 1:
        lines += ["", "Test episodes per evaluation differ: " + "; ".join(
            f"{n} for seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, sorted(seeds)))}"
            for n, seeds in sorted(counts.items())) + f" (the first {min(counts)} are the same episodes for every count)."]
    lines += ["", *_claims(by_method, oracle, cloned or {})]
    if bars:
        from redraw.plots import results_bars

        name = f"{tag}-{pair}.png"
        results_bars(bars, figures / name, f"{pair}: return over seeds (95% CI)")
        lines += ["", f"![{pair}]({rel}/{name})"]
    return lines + [""]


def _claims(by_method: dict, oracle: dict, cloned: dict[int, float]) -> list[str]:
    redraw = {s: r["return_mean"] for s, r in by_method.get("redraw", {}).items() if r.get("valid") is not False}
    if not redraw:
        return ["Claims: no valid ReDRAW evaluation."]
    out = []
    for base in baselines():
        other = {s: r["return_mean"] for s, r in by_method.get(base, {}).items() if r.get("valid") is not False}
        seeds = sorted(set(redraw) & set(other))
        if not seeds:
            void = base in by_method
            out.append(f"- ReDRAW above {base}: {'its every seed is void' if void else 'not run'}")
            continue
        mean, half = mean_ci([redraw[s] - other[s] for s in seeds])
        out.append(f"- ReDRAW above {base}: difference {_fmt(mean, half)} over seeds {seeds} → "
                   f"**{_verdict(mean, half, 0.0, len(seeds))}**")
    seeds = sorted(set(redraw) & set(cloned))
    if seeds:  # not one of the paper's claims: the reference a method learning from the data should beat
        mean, half = mean_ci([redraw[s] - cloned[s] for s in seeds])
        out.append(f"- ReDRAW above the cloned reference (not a claim of the paper): difference {_fmt(mean, half)} "
                   f"over seeds {seeds} → **{_verdict(mean, half, 0.0, len(seeds))}**")
    seeds = sorted(s for s in redraw if s in oracle and oracle[s] > 0)
    if seeds:
        mean, half = mean_ci([redraw[s] / oracle[s] for s in seeds])
        shown = f"{100 * mean:.0f}%" + (f" ± {100 * half:.0f}%" if math.isfinite(half) else "")
        out.append(f"- ReDRAW ≥ {ORACLE_SHARE:.0%} of the oracle: {shown} over seeds {seeds} → "
                   f"**{_verdict(mean, half, ORACLE_SHARE, len(seeds))}**")
    else:
        out.append("- ReDRAW ≥ 80% of the oracle: no valid oracle evaluation")
    return ["Claims (per-seed differences, 95% CI):", *out]


def _trainings_section(trainings: list[dict], figures: Path, rel: str) -> list[str]:
    lines = ["## Did the trainings learn their task?", "",
             "A training has learnt its task when its last evaluation reaches the threshold (returns out of "
             "~500: action repeat 2, the last sub-step's reward). Methods that start from a training that did "
             "not are void.", "",
             "| pair | seed | training | preset | steps | last eval return (episodes) | threshold | learnt | finished |",
             "|---|---:|---|---|---:|---:|---:|---|---|"]
    for t in sorted(trainings, key=lambda t: (t["pair"], t["preset"], _run_order(t), TRAININGS.index(t["training"]),
                                              t.get("variant") or "")):
        thr = t.get("threshold")
        learnt = {True: "yes", False: "**no**", None: "–"}[t.get("learned")] if t["finished"] else \
            f"not yet ({'above' if thr is not None and t['final_return'] >= thr else 'below'} so far)"
        name = t["training"] + (f" (variant `{t['variant']}`)" if t.get("variant") else "") \
            + (f" (pretrain seed {t['pretrain_seed']})" if t.get("pretrain_seed") is not None else "")
        last = f"{t['final_return']:.1f}" + (f" ({t['final_episodes']})" if t.get("final_episodes") else "")
        lines.append(f"| {t['pair']} | {t['seed']} | {name} | {t['preset']} | {t['steps']:,} | "
                     f"{last} | {'–' if thr is None else f'{thr:.0f}'} | {learnt} | "
                     f"{'yes' if t['finished'] else 'no (stopped)'} |")
    by_pair = defaultdict(list)
    for t in trainings:
        by_pair[t["pair"]].append(t)
    from redraw.plots import training_curves

    for pair, ts in sorted(by_pair.items()):
        name = f"trainings-{pair}.png"
        training_curves(ts, figures / name, f"{pair}: learning curves")
        lines += ["", f"![{pair} trainings]({rel}/{name})"]
    return lines + [""]


def _missing(records: list[dict]) -> list[str]:
    main = [r for r in records
            if r["preset"] == "cpu" and r.get("target_data") == "expert" and r["target_transitions"] == 40000
            and not r.get("variant")]
    have = {(r["pair"], r["seed"], r["method"]) for r in main if r.get("valid") is not False}
    void = len({(r["pair"], r["seed"], r["method"]) for r in main if r.get("valid") is False} - have)
    wanted = [(p, s, m) for p in PAIRS for s in SEEDS
              for m in _main_methods()]
    missing = [k for k in wanted if k not in have]
    if not missing:
        return ["Every pair x seed x method of the main comparison is here, and valid."]
    by_pair = defaultdict(list)
    for p, s, m in missing:
        by_pair[p].append(f"{m}@{s}")
    return [f"The main comparison (`cpu` preset, the expert's data, 40,000 target transitions, pairs x seeds "
            f"{list(SEEDS)} x the five methods) lacks {len(missing)} of {len(wanted)} valid points"
            f"{f' ({void} of them run but void)' if void else ''}:", "",
            *(f"- {p}: {len(v)} missing ({', '.join(v[:6])}{', ...' if len(v) > 6 else ''})"
              for p, v in by_pair.items())]


def _data_size_section(records: list[dict], figures: Path, rel: str) -> list[str]:
    groups = defaultdict(list)
    for r in records:
        if r.get("valid") is not False:
            nested = "nested" if r.get("pretrain_seed") is not None else ""
            if r.get("round"):
                nested += f"-round{r['round']}"
            groups[(r["preset"], r.get("target_data", "?"), r["protocol"], r.get("variant") or "", nested,
                    r["pair"])].append(r)
    lines = ["## Return vs target-data size", ""]
    drawn = False
    from redraw.plots import data_efficiency

    for (preset, data, protocol, variant, nested, pair), recs in sorted(groups.items()):
        sizes = sorted({r["target_transitions"] for r in recs})
        if len(sizes) < 2:
            continue
        name = _file_name(f"data-size-{preset}-{data}-{protocol}{f'-{variant}' if variant else ''}"
                          f"{f'-{nested}' if nested else ''}-{pair}.png")
        rows = []
        for method in _methods():
            for n in sizes:
                vals = [r["return_mean"] for r in recs if r["method"] == method and r["target_transitions"] == n]
                if vals:
                    mean, half = mean_ci(vals)
                    h = half if math.isfinite(half) else 0.0
                    rows.append({"method": method, "size": n, "mean": mean, "ci_low": mean - h, "ci_high": mean + h})
        data_efficiency(rows, figures / name, f"{pair} ({preset}, {data}{f', {variant}' if variant else ''}"
                        f"{', nested protocol: runs of pretrain seeds x seeds' if nested else ''}; 95% CI over seeds)")
        lines += [f"![{pair} data size]({rel}/{name})", ""]
        drawn = True
    if not drawn:
        lines.append("No pair has results at more than one target-data size yet "
                     "(`redraw experiment transfer_quality --target-transitions N`).")
    return lines + [""]


def _mean_curve(curves: list[list]) -> list[tuple[int, float]]:
    """The mean over seeds of curves [[x, y], ...] at the x every one of them has."""
    common = set.intersection(*({int(x) for x, _ in c} for c in curves))
    return [(x, float(np.mean([dict((int(a), b) for a, b in c)[x] for c in curves]))) for x in sorted(common)]


def _adaptation_curves(recs: list[dict]) -> dict[str, dict]:
    """Per method: its seeds, mean policy curve, and mean held-out curve over calibration then the
    policy stage (adapt_heldout continues after the calibration's last update)."""
    out = {}
    for method in _methods():
        mine = [r for r in recs if r["method"] == method]
        policy = [r["policy_curve"] for r in mine if r.get("policy_curve")]
        held = []
        for r in mine:
            cal = r.get("heldout") or []
            end = cal[-1][0] if cal else 0
            tail = [[end + x, y] for x, y in r.get("adapt_heldout") or [] if x > 0]
            if cal or tail:
                held.append(cal + tail)
        if policy or held:
            ends = {r["heldout"][-1][0] for r in mine if r.get("heldout") and r.get("adapt_heldout")}
            out[method] = {"seeds": [_run(r) for r in sorted(mine, key=_run_order)],
                           "policy": _mean_curve(policy) if policy else [],
                           "heldout": _mean_curve(held) if held else [],
                           "calibration_end": min(ends) if ends else None}
    return out


def _adaptation_section(records: list[dict], figures: Path, rel: str) -> list[str]:
    lines = ["## Return and held-out dynamics error vs adaptation updates", "",
             "The paper's overfitting claim: fine-tuning the world model on little target data overfits as "
             "adaptation goes on, the residual does not. Per method (mean over valid seeds): its policy's "
             "return in the target env vs policy updates (`train_policy.eval_every`, on evaluation seeds of "
             "their own, not the test episodes'), and the adapted model's open-loop KL on held-out target "
             "episodes vs adaptation updates (`calibrate.gap_every`; under the `concurrent` protocol it goes on "
             "through the policy stage). The range covered is what the protocol ran: the paper's claim is about "
             "schedules of 100k updates and more.", ""]
    groups = defaultdict(list)
    for r in records:
        if r.get("valid") is not False:
            groups[(*_setting(r), r["pair"])].append(r)
    drawn = False
    from redraw.plots import adaptation_curves

    for key, recs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        curves = _adaptation_curves(recs)
        if not curves:
            continue
        pair = key[-1]
        oracle = [r["return_mean"] for r in recs if r["method"] == "oracle"]
        lines += [f"### {pair}: {_setting_name(key[:6])}", "",
                  "| method | seeds | held-out open-loop KL: start → lowest (update) → last (update) | "
                  "policy return: first → last evaluation (update) |", "|---|---|---|---|"]
        for method, c in curves.items():
            h, pc = c["heldout"], c["policy"]
            if h:
                low = min(h, key=lambda pt: pt[1])
                held = f"{h[0][1]:.2f} → {low[1]:.2f} ({low[0]:,}) → {h[-1][1]:.2f} ({h[-1][0]:,})"
            else:
                held = "–"
            pol = f"{pc[0][1]:.1f} → {pc[-1][1]:.1f} ({pc[-1][0]:,})" if pc else "–"
            lines.append(f"| {method} | {', '.join(map(str, c['seeds']))} | {held} | {pol} |")
        name = _file_name(f"adaptation-{'-'.join(str(k) for k in key if k != '')}.png")
        adaptation_curves(curves, float(np.mean(oracle)) if oracle else None, figures / name,
                          f"{pair} ({_setting_name(key[:6]).replace('`', '')})")
        lines += ["", f"![{pair} adaptation]({rel}/{name})", ""]
        drawn = True
    if not drawn:
        lines += ["No run has recorded these curves yet (records made before they were kept have none; "
                  "`redraw experiment transfer_quality --harvest` adds them from the work dirs).", ""]
    return lines


# ------------------------------------------------------------------------------------------------
# The nested protocol: records with a pretrain_seed (shipped source pretrainings x adaptation seeds)

def _label(method: str) -> str:
    """A method's name in the reports (its ``label`` in the registry)."""
    return REGISTRY[method].title if method in REGISTRY else method


def _nested_cloning(path: Path) -> dict[tuple, dict[str, float]]:
    """The cloned references' returns of the nested protocol's runs from the bc_reference.json
    beside the results (its records checked by its own section first): (pair, preset, target data,
    target transitions, round, pretrain seed, seed) -> {reference: return}; every record of a run
    holds the same one."""
    if not path.is_file():
        return {}
    out: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in json.loads(path.read_text())["records"]:
        if r.get("pretrain_seed") is not None:
            key = (r["pair"], r["preset"], r["target_data"], r["target_transitions"], r.get("round") or 0,
                   r["pretrain_seed"], r["seed"])
            out[key].setdefault(r["reference"], r["cloned"]["return_mean"])
    return out


def _nested_runs(records: list[dict], cloning: dict) -> dict:
    """family (preset, protocol, variant) -> regime -> pair -> method -> run (pretrain seed, seed)
    -> {"return", "valid"}; a run's cloned references join as methods of their own."""
    runs = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(dict))))
    for r in records:
        family, reg = (r["preset"], r["protocol"], r.get("variant") or ""), regime(r)
        run = (r["pretrain_seed"], r["seed"])
        runs[family][reg][r["pair"]][r["method"]][run] = {"return": r["return_mean"], "valid": r.get("valid")}
        key = (r["pair"], r["preset"], r["target_data"], r["target_transitions"], r.get("round") or 0, *run)
        for ref, value in cloning.get(key, {}).items():
            runs[family][reg][r["pair"]][ref][run] = {"return": value, "valid": True}
    return runs


def _valid(runs: dict) -> dict:
    """A method's valid runs: run -> return (void runs never averaged in)."""
    return {k: v["return"] for k, v in sorted(runs.items()) if v["valid"] is not False}


def _experts(family: dict) -> dict[str, float | str]:
    """The expert's return on each pair (the mean of its valid evaluations in every regime: the same
    shipped expert on the same test episodes), or why there is none."""
    out = {}
    for pairs in family.values():
        for pair, methods in pairs.items():
            out.setdefault(pair, [])
            out[pair] += list(_valid(methods.get("oracle", {})).values())
    void = {pair for pairs in family.values() for pair, methods in pairs.items()
            if any(v["valid"] is False for v in methods.get("oracle", {}).values())}
    return {pair: (float(np.mean(v)) if v and np.mean(v) > 0 else
                   "the expert's mean return is not positive" if v else
                   "the expert is void (its training did not learn)" if pair in void else "no expert evaluation")
            for pair, v in out.items()}


def _decide(n: int, low: float, high: float, line: float = 0.0, margin: float | None = None,
            below: str = "worse") -> str:
    """yes (the interval above ``line``), ``below`` (under it), equal (within ``line`` ± margin) or
    undecided (fewer than two runs give no interval)."""
    if n < 2:
        return "undecided"
    if low > line:
        return "yes"
    if high < line:
        return below
    if margin is not None and line - margin <= low and high <= line + margin:
        return "equal"
    return "undecided"


def _more(n: int, point: float, low: float, high: float, line: float = 0.0, margin: float | None = None) -> int | None:
    """Roughly how many more runs per pair a bootstrap interval needs to decide, at the same
    spread and point (its half-width shrinking as one over the root of the runs)."""
    off = abs(point - line)
    target = max(off, margin - off) if margin is not None else off
    half = (high - low) / 2
    if n < 2 or target <= 0 or not math.isfinite(half):
        return None
    return max(1, math.ceil(n * (half / target) ** 2) - n)


def _pct(values, expert: float) -> list[float]:
    return [100.0 * v / expert for v in values]


def _ci(point: float, low: float, high: float, signed: bool = False, digits: int = 1) -> str:
    p = f"{point:+.{digits}f}" if signed else f"{point:.{digits}f}"
    return f"{p} [{low:.{digits}f}, {high:.{digits}f}]"


def _sci(summary: dict, signed: bool = False) -> str:
    """``_ci`` of a ``redraw.stats.summarise``."""
    return _ci(summary["return_mean"], summary["return_ci_low"], summary["return_ci_high"], signed)


def _pair_analysis(methods: dict, expert) -> dict:
    """One pair in one regime: per method its valid runs and void count; ReDRAW's paired
    differences from each other method (by run; Student-t, ``redraw.stats.paired``) with their
    verdicts, and ReDRAW's share of the expert against ``ORACLE_SHARE``."""
    from redraw.stats import paired, runs_needed, summarise

    have = isinstance(expert, float)
    out = {"methods": {}, "versus": {}, "share": None}
    for m in _nested_methods():
        if m in methods:
            valid = _valid(methods[m])
            out["methods"][m] = {"valid": valid, "void": len(methods[m]) - len(valid)}
    redraw = out["methods"].get("redraw", {}).get("valid", {})
    for m in _nested_methods():
        if m in ("redraw", "oracle") or m not in out["methods"]:
            continue
        other = out["methods"][m]["valid"]
        runs = sorted(set(redraw) & set(other))
        if not runs:
            out["versus"][m] = {"n": 0, "verdict": "no runs in common" if redraw and other else
                                "void" if not other else "no ReDRAW run"}
            continue
        ret = paired([other[k] for k in runs], [redraw[k] for k in runs], (m, "redraw"))["difference"]
        row = {"n": len(runs), "return": ret}
        if have:
            pct = paired(_pct([other[k] for k in runs], expert), _pct([redraw[k] for k in runs], expert))["difference"]
            diffs = [100.0 * (redraw[k] - other[k]) / expert for k in runs]
            row.update(pct=pct, needed=runs_needed(diffs, 0.0, EQUAL_MARGIN),
                       verdict=_decide(len(runs), pct["return_ci_low"], pct["return_ci_high"], 0.0, EQUAL_MARGIN))
        else:
            row.update(verdict=_decide(len(runs), ret["return_ci_low"], ret["return_ci_high"]),
                       needed=runs_needed([redraw[k] - other[k] for k in runs]))
        out["versus"][m] = row
    if have and redraw:
        shares = _pct(redraw.values(), expert)
        s = summarise(shares)
        out["share"] = {"n": len(shares), "summary": s, "needed": runs_needed(shares, 100 * ORACLE_SHARE),
                        "verdict": _decide(len(shares), s["return_ci_low"], s["return_ci_high"], 100 * ORACLE_SHARE,
                                           below="no")}
    return out


def _columns(per_pair: dict[str, list[float]]) -> np.ndarray | None:
    """A runs x pairs matrix of the first n runs of each pair (n: the fewest any pair has: the
    stratified bootstrap resamples as many runs in each); None where a pair has none."""
    n = min((len(v) for v in per_pair.values()), default=0)
    return np.array([v[:n] for v in per_pair.values()], np.float64).T if n else None


def _regime_overall(pairs: dict, experts: dict, analyses: dict, reps: int) -> dict | None:
    """Across the pairs with an expert and a valid ReDRAW run: per method the IQM of its % of the
    expert with a stratified bootstrap interval; per other method ReDRAW's probability of
    improvement and the IQM of the paired differences (in % of the expert), with intervals
    (rliable); ReDRAW's IQM against ``ORACLE_SHARE``; performance profiles."""
    from redraw.stats import improvement_intervals, iqm_intervals, performance_profiles

    tasks = [p for p in sorted(pairs) if isinstance(experts.get(p), float)
             and analyses[p]["methods"].get("redraw", {}).get("valid")]
    if not tasks:
        return None
    scores, diffs, left_out = {}, {}, {}
    for m in _nested_methods():
        per_pair = {p: _pct(analyses[p]["methods"].get(m, {}).get("valid", {}).values(), experts[p]) for p in tasks}
        missing = [p for p, v in per_pair.items() if not v]
        if missing:
            left_out[m] = missing
            continue
        scores[m] = _columns(per_pair)
        if m not in ("redraw", "oracle"):
            common = {}
            for p in tasks:
                redraw, other = analyses[p]["methods"]["redraw"]["valid"], analyses[p]["methods"][m]["valid"]
                common[p] = [100.0 * (redraw[k] - other[k]) / experts[p] for k in sorted(set(redraw) & set(other))]
            matrix = _columns(common)
            if matrix is not None:
                diffs[m] = matrix
    iqms = iqm_intervals({**scores, **{f"redraw - {m}": d for m, d in diffs.items()}}, reps=reps)
    poi = improvement_intervals({m: (scores["redraw"], scores[m]) for m in scores if m != "redraw"}, reps=reps)
    top = max(120.0, max(float(s.max()) for s in scores.values()))
    taus = np.linspace(min(0.0, min(float(s.min()) for s in scores.values())), math.ceil(top / 10) * 10, 61)
    versus = {}
    for m, d in diffs.items():
        point, low, high = iqms[f"redraw - {m}"]
        versus[m] = {"n": d.shape[0], "diff": (point, low, high), "poi": poi[m],
                     "verdict": _decide(d.shape[0], low, high, 0.0, EQUAL_MARGIN),
                     "more": _more(d.shape[0], point, low, high, 0.0, EQUAL_MARGIN)}
    for m in scores:
        if m not in versus and m not in ("redraw",):
            versus[m] = {"n": 0, "poi": poi[m], "verdict": "no runs in common"}
    point, low, high = iqms["redraw"]
    n = scores["redraw"].shape[0]
    share = {"n": n, "iqm": (point, low, high), "verdict": _decide(n, low, high, 100 * ORACLE_SHARE, below="no"),
             "more": _more(n, point, low, high, 100 * ORACLE_SHARE)}
    return {"tasks": tasks, "scores": scores, "iqm": {m: iqms[m] for m in scores}, "versus": versus, "share": share,
            "left_out": left_out, "taus": taus, "profiles": performance_profiles(scores, taus, reps=reps)}


def _answer(row: dict | None, overall: bool = False) -> str:
    """A 'does ReDRAW beat it' cell: the verdict and the difference in % of the expert."""
    if row is None:
        return "–"
    verdict = row["verdict"]
    if "pct" in row:
        numbers = f" ({_sci(row['pct'], True)})"
    elif "diff" in row:
        numbers = f" ({_ci(*row['diff'], signed=True)})"
    elif "return" in row:
        numbers = f" ({_sci(row['return'], True)} return)"
    else:
        return verdict
    more = row.get("more") if overall else (row["needed"] - row["n"] if row.get("needed") else None)
    text = {"yes": "**yes**", "worse": "**no**, worse", "equal": f"**no**, equal within ±{EQUAL_MARGIN:g}%",
            "no": "**no**"}.get(verdict)
    if text is None:
        text = "undecided" + (f", ~{more} more seed{'s' if more != 1 else ''}" if more else "")
    return text + numbers


def _share_answer(share: dict | None, overall: bool = False) -> str:
    if share is None:
        return "–"
    if overall:
        point, low, high = share["iqm"]
        more = share["more"]
    else:
        s = share["summary"]
        point, low, high = s["return_mean"], s["return_ci_low"], s["return_ci_high"]
        more = share["needed"] - share["n"] if share.get("needed") else None
    text = {"yes": "**yes**", "no": "**no**"}.get(share["verdict"])
    if text is None:
        text = "undecided" + (f", ~{more} more seed{'s' if more != 1 else ''}" if more else "")
    return f"{text} ({_ci(point, low, high)}%)"


def _paper_claim(analyses: dict) -> str:
    """The paper's claim in one regime: ReDRAW >= ORACLE_SHARE of the expert and above every
    baseline (``redraw.methods.baselines``) on at least 3 of the 4 pairs."""
    holds, fails, open_ = [], [], []
    for pair, a in sorted(analyses.items()):
        verdicts = [a["versus"].get(b, {}).get("verdict", "not run") for b in baselines()]
        verdicts.append(a["share"]["verdict"] if a["share"] else "no expert")
        if all(v == "yes" for v in verdicts):
            holds.append(pair)
        elif any(v in ("worse", "equal", "no") for v in verdicts):
            fails.append(pair)
        else:
            open_.append(pair)
    verdict = "**holds**" if len(holds) >= 3 else "**does not hold**" if len(holds) + len(open_) < 3 else "undecided"
    parts = [f"{label}: {', '.join(ps)}" for label, ps in (("holds on", holds), ("fails on", fails),
                                                             ("undecided on", open_)) if ps]
    return (f"The paper's claim (ReDRAW ≥ {ORACLE_SHARE:.0%} of the expert and above {', '.join(baselines())} "
            f"on ≥ 3 of 4 pairs): {verdict}; {'; '.join(parts) or 'no pair'}.")


def _plan_line(reg: str, analyses: dict) -> str:
    pairs_wanted, runs_wanted = NESTED_PLAN[reg]
    core = tuple(m for m in _nested_methods() if m in _main_methods())  # the expert last
    fewest = {p: min(len(a["methods"].get(m, {}).get("valid", {})) for m in core) for p, a in analyses.items()}
    enough = sorted(p for p, n in fewest.items() if n >= runs_wanted)
    short = ", ".join(f"{p}: {n}" for p, n in sorted(fewest.items()) if n < runs_wanted)
    have = f"{len(enough)} pairs have" if len(enough) != 1 else "1 pair has"
    return (f"Planned: ≥ {runs_wanted} valid runs of each of {', '.join(core[:-1])} and the expert on "
            f"≥ {pairs_wanted} pairs; {have} that many" + (f" (fewest valid runs: {short})" if short else "") + ".")


def _regime_lines(reg: str, pairs: dict, experts: dict, analyses: dict, overall: dict | None) -> list[str]:
    data, transitions, rnd, what = REGIMES[reg]
    present = [m for m in _nested_methods() if any(m in a["methods"] for a in analyses.values())]
    lines = [f"#### Regime ({reg}): {what}", "",
             "Runs per pair (valid; void: the training the method starts from did not learn its task, never "
             "averaged in):",
             "", "| pair | expert return | " + " | ".join(_label(m) for m in present) + " |",
             "|---|---:|" + "---:|" * len(present)]
    for pair in sorted(analyses):
        a, e = analyses[pair], experts.get(pair)
        cells = []
        for m in present:
            row = a["methods"].get(m)
            void = f" (+{row['void']} void)" if row and row["void"] else ""
            cells.append("–" if row is None else f"{len(row['valid'])}{void}")
        lines.append(f"| {pair} | {f'{e:.1f}' if isinstance(e, float) else e} | " + " | ".join(cells) + " |")
    lines += ["", _plan_line(reg, analyses), ""]
    if overall is None:
        lines += ["Across pairs: no pair has both a valid expert and a valid ReDRAW run.", ""]
    else:
        n_runs = {m: s.shape[0] for m, s in overall["scores"].items()}
        lines += [f"Across pairs ({', '.join(overall['tasks'])}): IQM of the % of the expert's return over runs and "
                  "pairs, 95% stratified bootstrap intervals (rliable; each pair's first n runs, n the fewest any "
                  "pair has).", "",
                  "| method | runs per pair | IQM, % of expert [95% CI] | P(ReDRAW > it) [95% CI] |",
                  "|---|---:|---:|---:|"]
        for m, (point, low, high) in overall["iqm"].items():
            poi = overall["versus"].get(m, {}).get("poi")
            lines.append(f"| {_label(m)} | {n_runs[m]} | {_ci(point, low, high)} | "
                         + (_ci(*poi, digits=2) if poi else "–") + " |")
        for m, missing in overall["left_out"].items():
            lines.append(f"| {_label(m)} | – | not on every pair (none valid on {', '.join(missing)}) | – |")
        lines += ["", "ReDRAW minus each method, paired by run (pretrain seed and seed), across pairs: the IQM of the "
                  "per-run differences in % of the expert with its stratified bootstrap interval:", "",
                  "| ReDRAW minus | runs per pair | IQM difference, % of expert [95% CI] | does ReDRAW beat it? |",
                  "|---|---:|---:|---|"]
        for m, row in overall["versus"].items():
            if "diff" in row:
                lines.append(f"| {_label(m)} | {row['n']} | {_ci(*row['diff'], signed=True)} | {_answer(row, True)} |")
        lines += ["", f"ReDRAW ≥ {ORACLE_SHARE:.0%} of the expert across pairs: "
                  f"{_share_answer(overall['share'], True)}.", ""]
    lines += ["Per pair: each method's mean over its valid runs with a 95% Student-t interval, and ReDRAW's paired "
              "differences (the runs both have: the same pretrain seed and seed).", ""]
    for pair in sorted(analyses):
        a, e = analyses[pair], experts.get(pair)
        have = isinstance(e, float)
        lines += [f"##### {pair}, regime ({reg})", "",
                  "| method | runs | return, mean [95% CI] | % of expert, mean [95% CI] |", "|---|---:|---:|---:|"]
        from redraw.stats import summarise

        for m, row in a["methods"].items():
            vals = list(row["valid"].values())
            if not vals:
                lines.append(f"| {_label(m)} | 0 (+{row['void']} void) | – | – |")
                continue
            s = summarise(vals)
            pct = summarise(_pct(vals, e)) if have else None
            void = f" (+{row['void']} void)" if row["void"] else ""
            lines.append(f"| {_label(m)} | {len(vals)}{void} | {_sci(s)} | {_sci(pct) if pct else '–'} |")
        lines += ["", "| ReDRAW minus | runs | difference in return [95% CI] | in % of expert [95% CI] | "
                  "does ReDRAW beat it? |", "|---|---:|---:|---:|---|"]
        for m, row in a["versus"].items():
            if not row["n"]:
                lines.append(f"| {_label(m)} | 0 | – | – | {row['verdict']} |")
                continue
            pct = _sci(row["pct"], True) if row.get("pct") else "–"
            lines.append(f"| {_label(m)} | {row['n']} | {_sci(row['return'], True)} | {pct} | {_answer(row)} |")
        lines += ["", f"ReDRAW ≥ {ORACLE_SHARE:.0%} of the expert: "
                  + (_share_answer(a["share"]) if have else f"– ({e})") + ".", ""]
    return lines


def _nested_section(records: list[dict], cloning: dict, figures: Path, rel: str, reps: int) -> list[str]:
    lines = ["## The nested comparison: shipped source pretrainings x adaptation seeds", ""]
    if not records:
        return lines + ["No record of the nested protocol yet (records with a `pretrain_seed`: a run starts from a "
                        "shipped source pretraining, `pretrained.source`).", ""]
    from redraw.plots import interval_panels, score_profiles

    lines += ["A run is one shipped source pretraining (`pretrain_seed`) and one adaptation seed (`seed`), which draws "
              "its own target data; a seed below is one such run. Scores are % of the expert's return on the pair "
              "(the oracle's mean over its valid evaluations). Across pairs: rliable's interquartile mean (IQM), 95% "
              f"stratified bootstrap intervals ({reps:,} resamples), probability of improvement and performance "
              "profiles. Per pair: ReDRAW's paired differences (by run) with 95% Student-t intervals. A comparison is "
              "decided where the interval of the difference excludes 0 (yes / worse) or lies within "
              f"±{EQUAL_MARGIN:g}% of the expert's return (equal); otherwise undecided, with roughly how many more "
              "runs per pair would decide it at the same spread. Each protocol (and preset, variant) is its own "
              "section, never pooled with another or with the records without a pretrain seed.", ""]
    for family, regimes in sorted(_nested_runs(records, cloning).items()):
        preset, protocol, variant = family
        tag = _file_name(f"nested-{preset}-{protocol}" + (f"-{variant}" if variant else ""))
        experts = _experts(regimes)
        order = [r for r in REGIMES if r in regimes]
        analyses = {reg: {p: _pair_analysis(m, experts.get(p)) for p, m in regimes[reg].items()} for reg in order}
        overall = {reg: _regime_overall(regimes[reg], experts, analyses[reg], reps) for reg in order}
        heading = f"### Nested: preset `{preset}`, protocol `{protocol}`"
        lines += [heading + (f", variant `{variant}`" if variant else ""), "", "#### Answers", "",
                  "Does ReDRAW beat each method (its difference in % of the expert's return, 95% CI), and does it "
                  f"reach {ORACLE_SHARE:.0%} of the expert? Per pair from the paired runs; across pairs from the "
                  "IQM of the paired differences.", "",
                  "| regime | pair | " + " | ".join(_questions()) + f" | ≥ {ORACLE_SHARE:.0%} of expert |",
                  "|---|---|" + "---|" * (len(_questions()) + 1)]
        for reg in order:
            for pair, a in sorted(analyses[reg].items()):
                lines.append(f"| ({reg}) | {pair} | " + " | ".join(_answer(a["versus"].get(m)) for m in _questions())
                             + f" | {_share_answer(a['share'])} |")
            o = overall[reg]
            if o is not None:
                lines.append(f"| ({reg}) | **all pairs** (IQM) | " + " | ".join(
                    _answer(o["versus"][m], True) if "diff" in o["versus"].get(m, {}) else "–" for m in _questions())
                    + f" | {_share_answer(o['share'], True)} |")
        lines += ["", *(f"- Regime ({reg}): {_paper_claim(analyses[reg])}" for reg in order), ""]
        shown = [reg for reg in order if overall[reg] is not None]
        if shown:
            glance = interval_panels(
                {f"({reg}) {REGIMES[reg][0]} x {REGIMES[reg][1]:,}" + (" + round" if REGIMES[reg][2] else ""):
                 [{"label": _label(m), "point": p, "low": lo, "high": hi, "highlight": m == "redraw"}
                  for m, (p, lo, hi) in overall[reg]["iqm"].items()] for reg in shown},
                figures / f"{tag}-iqm.png", f"IQM % of the expert's return, 95% stratified bootstrap CI "
                f"(preset {preset}, protocol {protocol}); dashed: {ORACLE_SHARE:.0%} and 100%",
                "% of the expert's return", lines=(100 * ORACLE_SHARE, 100.0))
            poi = interval_panels(
                {f"({reg})": [{"label": f"ReDRAW > {_label(m)}", "point": v["poi"][0], "low": v["poi"][1],
                               "high": v["poi"][2], "highlight": True} for m, v in overall[reg]["versus"].items()]
                 for reg in shown},
                figures / f"{tag}-improvement.png", f"Probability of improvement, 95% CI (preset {preset}, protocol "
                f"{protocol})", "P(ReDRAW > method)", lines=(0.5,), xlim=(0.0, 1.0))
            lines += [f"![IQM per method and regime]({rel}/{glance.name})", "",
                      f"![probability of improvement]({rel}/{poi.name})", ""]
        for reg in order:
            lines += _regime_lines(reg, regimes[reg], experts, analyses[reg], overall[reg])
            if overall[reg] is not None:
                profiles = score_profiles(
                    {f"({reg})": {_label(m): v for m, v in overall[reg]["profiles"].items()}}, overall[reg]["taus"],
                    figures / f"{tag}-{reg}-profiles.png", f"Performance profiles, regime ({reg}), 95% CI "
                    f"(preset {preset}, protocol {protocol})", "% of the expert's return",
                    lines=(100 * ORACLE_SHARE,))
                lines += [f"![performance profiles ({reg})]({rel}/{profiles.name})", ""]
    return lines


SUMMARY_FIELDS = ("return_mean", "return_ci_low", "return_ci_high")


#: the paired comparisons beside the results file: file name -> (title, what it compares, the
#: fields that tell its records apart (seed aside) and their column names, the two runs compared)
PAIRED = {
    "onpolicy_round.json": (
        "Deploy, log, calibrate again (beyond the paper)",
        "`redraw experiment onpolicy_round`: METHOD's policy deployed on the target and logged (`policy`), or "
        "new expert episodes (`expert`, the control), replace that many of the expert's episodes at the same "
        "budget; calibration and a policy training again; both rounds' policies on the same test episodes.",
        {"method": "method", "logged_by": "logged by", "expert_episodes": "expert episodes",
         "policy_episodes": "logged episodes"},
        ("round0", "round1")),
    "policy_variants.json": (
        "Policy-stage variants",
        "`redraw experiment policy_variant`: the same calibrated model and target data, the policy stage "
        "trained again with other settings (`variant`); both policies on the same test episodes.",
        {"method": "method", "variant": "variant"},
        ("base", "changed")),
    "bc_reference.json": (
        "Behaviour cloning without a world model (a reference)",
        "`redraw experiment bc_reference`: the agent's actor fit to the target data's own actions from the "
        "observations, no world model; each method's policy (`policy`) and the cloned one (`cloned`) on the "
        "same test episodes.",
        {"preset": "preset", "target_data": "target data", "target_transitions": "target transitions",
         "reference": "reference", "method": "method"},
        ("policy", "cloned")),
}


def _paired_section(path: Path) -> list[str]:
    """One of the ``PAIRED`` files: each comparison and, per setting, the paired difference's mean
    over seeds with its interval."""
    title, intro, labels, (before, after) = PAIRED[path.name]
    try:
        recs = json.loads(path.read_text())["records"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ResultsError(f"{path}: not a {path.name} results file ({exc})") from None
    counts = ("episodes", "transitions")  # integer labels; the others are names
    fields = {"pair": str, "seed": int, **{k: (int if k.endswith(counts) else str) for k in labels},
              before: dict, after: dict, "difference": dict}
    for i, rec in enumerate(recs):
        _check(path, "records", i, rec, fields, ("pair", "seed", "pretrain_seed", *labels), kind="paired")
        if path.name == "bc_reference.json" and rec["reference"] not in CLONING:
            raise ResultsError(f"{path}: records[{i}] ({_name(rec, ('pair', 'seed', 'pretrain_seed', *labels))}): "
                               f"unknown reference {rec['reference']!r}; references: {', '.join(CLONING)}")
        for part in (before, after, "difference"):
            _check(path, f"records[{i}].{part}", 0, rec[part], {k: float for k in SUMMARY_FIELDS})
    cols = list(labels)
    nested = any(r.get("pretrain_seed") is not None for r in recs)
    if any(r.get("round") is not None for r in recs):  # a calibrate-again round's records apart from round 0's
        cols.insert(0, "round")
        labels = {"round": "round", **labels}
    if nested:  # the nested protocol's runs (pretrain seed x seed) apart from the others, never pooled
        cols.insert(0, "pretrain_seed")
        labels = {"pretrain_seed": "pretrain seed", **labels}
    lines = [f"## {title}", "", f"From `{path.as_posix()}` ({intro} Intervals are 95%: over test episodes for each "
             "run, paired per episode for the difference.)", "",
             "| pair | seed | " + " | ".join(labels.values()) + f" | {before} | {after} | {after} - {before} |",
             "|---|---:|" + "---|" * len(cols) + "---:|---:|---:|"]
    shown = lambda r, c: "–" if r.get(c) is None else str(r[c])  # noqa: E731
    for r in sorted(recs, key=lambda r: (r["pair"], *(shown(r, c) for c in cols), r["seed"])):
        lines.append(f"| {r['pair']} | {r['seed']} | " + " | ".join(shown(r, c) for c in cols)
                     + f" | {interval(r[before])} | {interval(r[after])} | {interval(r['difference'])} |")
    groups = defaultdict(list)
    for r in recs:
        runs = "pretrain seed x seed" if r.get("pretrain_seed") is not None else "seed"
        groups[(r["pair"], *((runs,) if nested else ()), *(shown(r, c) for c in cols if c != "pretrain_seed"))].append(
            r["difference"]["return_mean"])
    group_labels = [v for c, v in labels.items() if c != "pretrain_seed"]
    apart = "; a nested run is a pretrain seed and a seed, never pooled with the runs without one" if nested else ""
    lines += ["", f"Over seeds (95% t interval of the per-seed paired differences{apart}):", "",
              "| pair | " + ("runs | " if nested else "") + " | ".join(group_labels)
              + f" | seeds | {after} - {before} |",
              "|---|" + "---|" * (len(group_labels) + nested) + "---:|---:|"]
    for key, diffs in sorted(groups.items()):
        lines.append("| " + " | ".join(key) + f" | {len(diffs)} | {_fmt(*mean_ci(diffs))} |")
    return [*lines, ""]


def build_report(results: str | os.PathLike, out: str | os.PathLike, figures: str | os.PathLike | None = None,
                 command: str = "redraw report", reps: int | None = None) -> Path:
    """Write the report ``out`` (markdown) and its figures (default: ``<out dir>/figures/results``),
    with a section for each of the ``PAIRED`` comparison files found beside ``results``; the nested
    protocol's records (those with a pretrain seed) in sections of their own, bootstrapped with
    ``reps`` resamples (default ``redraw.stats.REPS``)."""
    from redraw.stats import REPS

    everything, trainings = load_results(results)
    nested = [r for r in everything if r.get("pretrain_seed") is not None]
    records = [r for r in everything if r.get("pretrain_seed") is None]
    paired_lines = [line for name in PAIRED if Path(results).with_name(name).is_file()
                    for line in _paired_section(Path(results).with_name(name))]
    out = Path(out)
    figures = Path(figures) if figures else out.parent / "figures" / "results"
    figures.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(figures, out.parent)
    commits = sorted({r["commit"] for r in [*records, *trainings] if r.get("commit")})
    lines = ["# Results", "",
             f"Generated by `{command}` from `{Path(results).as_posix()}` (do not edit by hand; "
             "`redraw experiment transfer_quality` adds to that file). "
             f"Code at commit{'s' if len(commits) > 1 else ''} {', '.join(commits) or '–'}.", "",
             "Returns are the mean over each evaluation's episodes, in the target env (the source policy in "
             "the source env); means and 95% Student-t intervals are over seeds. Void points (the training "
             "the method starts from did not learn its task) are listed but never averaged in.", "",
             *_nested_section(nested, _nested_cloning(Path(results).with_name("bc_reference.json")), figures, rel,
                              reps or REPS),
             "## What is missing", "", *_missing(records), "",
             "## Transfer", "", "Records without a pretrain seed: each seed trained its own source pretraining.", ""]
    settings = defaultdict(lambda: defaultdict(list))
    for r in records:
        settings[_setting(r)][r["pair"]].append(r)
    if not settings:
        lines += ["No evaluation has finished yet.", ""]
    cloned = _cloned_returns(Path(results).with_name("bc_reference.json"))
    for k, (key, pairs) in enumerate(sorted(settings.items(), key=lambda kv: tuple(map(str, kv[0])))):
        lines += [f"### {_setting_name(key)}", ""]
        preset, data, _, transitions, _, _ = key
        for pair in sorted(pairs):
            lines += _pair_section(pair, pairs[pair], figures, rel, f"returns-{k}",
                                   cloned.get((pair, preset, data, transitions)))
    lines += _data_size_section(everything, figures, rel)
    lines += _adaptation_section(everything, figures, rel)
    lines += paired_lines
    lines += _trainings_section(trainings, figures, rel) if trainings else ["## Trainings", "", "None recorded.", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    tmp.replace(out)
    return out

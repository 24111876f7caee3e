"""The results report (``redraw report``): docs/results.md and its figures, built from the quality
benchmark's ``benchmarks/results/transfer_quality.json`` and nothing else.

The file holds two lists (``benchmarks/transfer_quality.py`` writes them):

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
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from redraw.records import METHODS, TRAININGS
from redraw.stats import interval

__all__ = ["ResultsError", "load_results", "mean_ci", "build_report"]

BASELINES = ("no_adapt", "draw_finetune", "dreamer_finetune")
RECORD_FIELDS = {"pair": str, "seed": int, "method": str, "target_transitions": int, "protocol": str,
                 "return_mean": float, "return_std": float, "episodes": int, "preset": str, "commit": str}
TRAINING_FIELDS = {"pair": str, "seed": int, "training": str, "preset": str, "finished": bool,
                   "steps": int, "final_return": float, "curve": list}
PAIRS = ("pendulum-swingup-reversed", "reacher-easy-reversed", "cup-catch-windy", "finger-turn_hard-torque")
SEEDS = (0, 1, 2)
ORACLE_SHARE = 0.8  #: the paper's claim: ReDRAW reaches at least this share of the oracle's return
CURVE_KEYS = ("policy_curve", "heldout", "adapt_heldout")  #: a record's optional curves (redraw.records.CURVES)


class ResultsError(ValueError):
    """A results file or one of its records is not what the report can use."""


def _check(path: Path, section: str, i: int, rec, fields: dict) -> None:
    if not isinstance(rec, dict):
        raise ResultsError(f"{path}: {section}[{i}] is not an object")
    name = ", ".join(f"{k}={rec[k]!r}" for k in ("pair", "seed", "method", "training") if k in rec)
    where = f"{path}: {section}[{i}] ({name})"
    for key, kind in fields.items():
        if key not in rec:
            raise ResultsError(f"{where}: missing field {key!r}")
        value = rec[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise ResultsError(f"{where}: {key} must be {kind.__name__}, got {value!r}")
        if kind is float and not math.isfinite(value):
            raise ResultsError(f"{where}: {key} is not finite ({value!r})")
    for key in CURVE_KEYS if section == "records" else ():
        if key in rec:
            curve = rec[key]
            good = isinstance(curve, list) and all(
                isinstance(pt, list) and len(pt) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pt)
                for pt in curve)
            if not good:
                raise ResultsError(f"{where}: {key} must be a list of finite [x, y] pairs, got {str(curve)[:120]}")
    if section == "records" and rec["method"] not in METHODS:
        raise ResultsError(f"{where}: unknown method {rec['method']!r}; methods: {', '.join(METHODS)}")
    if section == "records" and rec.get("valid") not in (True, False, None):
        raise ResultsError(f"{where}: valid must be true, false or null, got {rec.get('valid')!r}")
    if section == "trainings" and rec["training"] not in TRAININGS:
        raise ResultsError(f"{where}: unknown training {rec['training']!r}; trainings: {', '.join(TRAININGS)}")


def load_results(path: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(records, trainings) of a results file; ResultsError names the file and the bad record."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: no results file (python benchmarks/transfer_quality.py writes it)")
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
    preset, data, protocol, transitions, variant = key
    return (f"preset `{preset}`, target data `{data}`, protocol `{protocol}`, {transitions:,} target transitions"
            + (f", variant `{variant}`" if variant else ""))


def _file_name(name: str) -> str:
    """A figure's file name: a variant's ``key=value`` and the protocol's ``+`` made safe."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _setting(r: dict) -> tuple:
    """What a record was measured under: preset, target data, protocol, target transitions, variant."""
    return r["preset"], r.get("target_data", "?"), r["protocol"], r["target_transitions"], r.get("variant") or ""


#: the reference without a world model (benchmarks/bc_reference.py), as its row is named
CLONED = "cloned, no world model (reference)"


def _cloned_returns(path: Path) -> dict[tuple, dict[int, float]]:
    """The cloned reference's return per seed, by (pair, preset, target data, target transitions),
    from the bc_reference.json beside the results (every record of a seed holds the same one; the
    file's records are checked by its own section first)."""
    if not path.is_file():
        return {}
    out: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in json.loads(path.read_text())["records"]:
        if r["reference"] == "bc":  # every episode cloned (not a filtered variant)
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
    for method in METHODS:
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
    for base in BASELINES:
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
    for t in sorted(trainings, key=lambda t: (t["pair"], t["preset"], t["seed"], TRAININGS.index(t["training"]),
                                              t.get("variant") or "")):
        thr = t.get("threshold")
        learnt = {True: "yes", False: "**no**", None: "–"}[t.get("learned")] if t["finished"] else \
            f"not yet ({'above' if thr is not None and t['final_return'] >= thr else 'below'} so far)"
        name = t["training"] + (f" (variant `{t['variant']}`)" if t.get("variant") else "")
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
              for m in ("no_adapt", "draw_finetune", "dreamer_finetune", "redraw", "oracle")]
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
            groups[(r["preset"], r.get("target_data", "?"), r["protocol"], r.get("variant") or "", r["pair"])].append(r)
    lines = ["## Return vs target-data size", ""]
    drawn = False
    from redraw.plots import data_efficiency

    for (preset, data, protocol, variant, pair), recs in sorted(groups.items()):
        sizes = sorted({r["target_transitions"] for r in recs})
        if len(sizes) < 2:
            continue
        name = _file_name(f"data-size-{preset}-{data}-{protocol}{f'-{variant}' if variant else ''}-{pair}.png")
        rows = []
        for method in METHODS:
            for n in sizes:
                vals = [r["return_mean"] for r in recs if r["method"] == method and r["target_transitions"] == n]
                if vals:
                    mean, half = mean_ci(vals)
                    h = half if math.isfinite(half) else 0.0
                    rows.append({"method": method, "size": n, "mean": mean, "ci_low": mean - h, "ci_high": mean + h})
        data_efficiency(rows, figures / name, f"{pair} ({preset}, {data}{f', {variant}' if variant else ''}; "
                        "95% CI over seeds)")
        lines += [f"![{pair} data size]({rel}/{name})", ""]
        drawn = True
    if not drawn:
        lines.append("No pair has results at more than one target-data size yet "
                     "(`python benchmarks/transfer_quality.py --target-transitions N`).")
    return lines + [""]


def _mean_curve(curves: list[list]) -> list[tuple[int, float]]:
    """The mean over seeds of curves [[x, y], ...] at the x every one of them has."""
    common = set.intersection(*({int(x) for x, _ in c} for c in curves))
    return [(x, float(np.mean([dict((int(a), b) for a, b in c)[x] for c in curves]))) for x in sorted(common)]


def _adaptation_curves(recs: list[dict]) -> dict[str, dict]:
    """Per method: its seeds, mean policy curve, and mean held-out curve over calibration then the
    policy stage (adapt_heldout continues after the calibration's last update)."""
    out = {}
    for method in METHODS:
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
            out[method] = {"seeds": sorted(r["seed"] for r in mine),
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
        lines += [f"### {pair}: {_setting_name(key[:5])}", "",
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
                          f"{pair} ({_setting_name(key[:5]).replace('`', '')})")
        lines += ["", f"![{pair} adaptation]({rel}/{name})", ""]
        drawn = True
    if not drawn:
        lines += ["No run has recorded these curves yet (records made before they were kept have none; "
                  "`python benchmarks/transfer_quality.py --harvest` adds them from the work dirs).", ""]
    return lines


SUMMARY_FIELDS = ("return_mean", "return_ci_low", "return_ci_high")


#: the paired comparisons beside the results file: file name -> (title, what it compares, the
#: fields that tell its records apart (seed aside) and their column names, the two runs compared)
PAIRED = {
    "onpolicy_round.json": (
        "Deploy, log, calibrate again (beyond the paper)",
        "`python benchmarks/onpolicy_round.py`: METHOD's policy deployed on the target and logged (`policy`), or "
        "new expert episodes (`expert`, the control), replace that many of the expert's episodes at the same "
        "budget; calibration and a policy training again; both rounds' policies on the same test episodes.",
        {"method": "method", "logged_by": "logged by", "expert_episodes": "expert episodes",
         "policy_episodes": "logged episodes"},
        ("round0", "round1")),
    "policy_variants.json": (
        "Policy-stage variants",
        "`python benchmarks/policy_variant.py`: the same calibrated model and target data, the policy stage "
        "trained again with other settings (`variant`); both policies on the same test episodes.",
        {"method": "method", "variant": "variant"},
        ("base", "changed")),
    "bc_reference.json": (
        "Behaviour cloning without a world model (a reference)",
        "`python benchmarks/bc_reference.py`: the agent's actor fit to the target data's own actions from the "
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
        _check(path, "records", i, rec, fields)
        for part in (before, after, "difference"):
            _check(path, f"records[{i}].{part}", 0, rec[part], {k: float for k in SUMMARY_FIELDS})
    cols = list(labels)
    lines = [f"## {title}", "", f"From `{path.as_posix()}` ({intro} Intervals are 95%: over test episodes for each "
             "run, paired per episode for the difference.)", "",
             "| pair | seed | " + " | ".join(labels.values()) + f" | {before} | {after} | {after} - {before} |",
             "|---|---:|" + "---|" * len(cols) + "---:|---:|---:|"]
    for r in sorted(recs, key=lambda r: (r["pair"], *(str(r[c]) for c in cols), r["seed"])):
        lines.append(f"| {r['pair']} | {r['seed']} | " + " | ".join(str(r[c]) for c in cols)
                     + f" | {interval(r[before])} | {interval(r[after])} | {interval(r['difference'])} |")
    groups = defaultdict(list)
    for r in recs:
        groups[(r["pair"], *(str(r[c]) for c in cols))].append(r["difference"]["return_mean"])
    lines += ["", "Over seeds (95% t interval of the per-seed paired differences):", "",
              "| pair | " + " | ".join(labels.values()) + f" | seeds | {after} - {before} |",
              "|---|" + "---|" * len(cols) + "---:|---:|"]
    for key, diffs in sorted(groups.items()):
        lines.append("| " + " | ".join(key) + f" | {len(diffs)} | {_fmt(*mean_ci(diffs))} |")
    return [*lines, ""]


def build_report(results: str | os.PathLike, out: str | os.PathLike, figures: str | os.PathLike | None = None,
                 command: str = "redraw report") -> Path:
    """Write the report ``out`` (markdown) and its figures (default: ``<out dir>/figures/results``),
    with a section for each of the ``PAIRED`` comparison files found beside ``results``."""
    records, trainings = load_results(results)
    paired_lines = [line for name in PAIRED if Path(results).with_name(name).is_file()
                    for line in _paired_section(Path(results).with_name(name))]
    out = Path(out)
    figures = Path(figures) if figures else out.parent / "figures" / "results"
    figures.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(figures, out.parent)
    commits = sorted({r["commit"] for r in [*records, *trainings] if r.get("commit")})
    lines = ["# Results", "",
             f"Generated by `{command}` from `{Path(results).as_posix()}` (do not edit by hand; "
             "`python benchmarks/transfer_quality.py` adds to that file). "
             f"Code at commit{'s' if len(commits) > 1 else ''} {', '.join(commits) or '–'}.", "",
             "Returns are the mean over each evaluation's episodes, in the target env (the source policy in "
             "the source env); means and 95% Student-t intervals are over seeds. Void points (the training "
             "the method starts from did not learn its task) are listed but never averaged in.", "",
             "## What is missing", "", *_missing(records), "", "## Transfer", ""]
    settings = defaultdict(lambda: defaultdict(list))
    for r in records:
        settings[_setting(r)][r["pair"]].append(r)
    if not settings:
        lines += ["No evaluation has finished yet.", ""]
    cloned = _cloned_returns(Path(results).with_name("bc_reference.json"))
    for k, (key, pairs) in enumerate(sorted(settings.items(), key=lambda kv: tuple(map(str, kv[0])))):
        lines += [f"### {_setting_name(key)}", ""]
        preset, data, _, transitions, _ = key
        for pair in sorted(pairs):
            lines += _pair_section(pair, pairs[pair], figures, rel, f"returns-{k}",
                                   cloned.get((pair, preset, data, transitions)))
    lines += _data_size_section(records, figures, rel)
    lines += _adaptation_section(records, figures, rel)
    lines += paired_lines
    lines += _trainings_section(trainings, figures, rel) if trainings else ["## Trainings", "", "None recorded.", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    tmp.replace(out)
    return out

"""The results report: built from the quality benchmark's records alone, void points left out,
claims judged on their intervals, and bad records refused by name."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from redraw.results_report import ResultsError, build_report, load_results, mean_ci

PAIR = "pendulum-swingup-reversed"


def record(method, seed, ret, valid=True, **extra):
    return {"pair": PAIR, "seed": seed, "method": method, "target_transitions": 40000, "protocol": "sequential",
            "target_data": "expert", "return_mean": ret, "return_std": 5.0, "episodes": 20, "preset": "cpu",
            "valid": valid, "commit": "abc1234", **extra}


def write(path, records, trainings=()):
    path.write_text(json.dumps({"records": list(records), "trainings": list(trainings)}))
    return path


def test_mean_ci_is_the_student_t_interval():
    mean, half = mean_ci([300.0, 340.0])
    assert mean == 320.0 and half == pytest.approx(12.7062 * 20.0, rel=1e-4)  # t(0.975, 1) * std (20 sqrt 2) / sqrt 2
    assert math.isnan(mean_ci([5.0])[1])


def test_report_averages_valid_seeds_only_and_judges_claims_by_their_intervals(tmp_path):
    recs = [record("oracle", s, 400.0 + s) for s in range(3)]
    recs += [record("redraw", s, r) for s, r in enumerate((390.0, 380.0, 385.0))]  # ~96% of the oracle
    recs += [record("no_adapt", s, r) for s, r in enumerate((10.0, 20.0, 15.0))]  # far below: "yes"
    recs += [record("draw_finetune", s, r) for s, r in enumerate((395.0, 370.0, 390.0))]  # overlapping: "undecided"
    recs += [record("dreamer_finetune", 0, 999.0, valid=False)]  # void: never averaged, never compared
    out = build_report(write(tmp_path / "r.json", recs), tmp_path / "docs/results.md")
    text = out.read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    mean, half = mean_ci([390.0, 380.0, 385.0])
    assert f"{mean:.1f} ± {half:.1f}" in rows["redraw"]
    assert "0 (+1 void)" in rows["dreamer_finetune"] and "999.0 (void)" in rows["dreamer_finetune"]
    assert "999" not in text.replace(rows["dreamer_finetune"], "")
    assert "ReDRAW above no_adapt: difference" in text and text.split("ReDRAW above no_adapt")[1].split("\n")[0].endswith("**yes**")
    assert text.split("ReDRAW above draw_finetune")[1].split("\n")[0].endswith("**undecided**")
    assert "ReDRAW above dreamer_finetune: its every seed is void" in text
    assert text.split("of the oracle:")[1].split("\n")[0].endswith("**yes**")
    assert (tmp_path / "docs/figures/results/returns-0-pendulum-swingup-reversed.png").stat().st_size > 0
    assert "lacks 48 of 60 valid points (1 of them run but void)" in text  # three pairs missing
    assert "Test episodes per evaluation differ" not in text


def test_evaluations_over_different_numbers_of_test_episodes_are_said_so(tmp_path):
    recs = [record(m, s, 100.0 + s, episodes=20 if s == 0 else 100) for m in ("redraw", "oracle") for s in range(3)]
    text = build_report(write(tmp_path / "r.json", recs), tmp_path / "docs/results.md").read_text()
    assert "Test episodes per evaluation differ: 20 for seed 0; 100 for seeds 1, 2" in text


def test_data_sizes_make_a_curve_and_stopped_trainings_are_not_judged(tmp_path):
    recs = [record(m, s, 100.0 + n / 1000, target_transitions=n) for m in ("redraw", "oracle")
            for s in (0, 1) for n in (5000, 40000)]
    stopped = {"pair": PAIR, "seed": 0, "training": "pretrain", "preset": "cpu", "finished": False, "steps": 5000,
               "final_return": 400.0, "threshold": 300.0, "learned": None, "curve": [[2500, 10.0], [5000, 400.0]],
               "commit": "abc1234"}
    text = build_report(write(tmp_path / "r.json", recs, [stopped]), tmp_path / "results.md").read_text()
    assert "![pendulum-swingup-reversed data size](figures/results/data-size-cpu-expert-sequential-" in text
    assert "not yet (above so far) | no (stopped)" in text
    assert (tmp_path / "figures/results/trainings-pendulum-swingup-reversed.png").is_file()


def test_a_variant_is_its_own_setting_and_not_part_of_the_main_comparison(tmp_path):
    from redraw.results_records import merge_results

    results = tmp_path / "r.json"
    plain = [record("redraw", 0, 100.0), record("oracle", 0, 400.0)]
    control = [record("redraw", 0, 250.0, variant="train_policy.imag_unimix=0.01")]
    merge_results(results, plain, [])
    merge_results(results, control, [])  # beside the plain record, not over it
    got, _ = load_results(results)
    assert sorted((r["method"], r.get("variant") or "") for r in got) == [
        ("oracle", ""), ("redraw", ""), ("redraw", "train_policy.imag_unimix=0.01")]
    text = build_report(results, tmp_path / "results.md").read_text()
    assert "40,000 target transitions, variant `train_policy.imag_unimix=0.01`" in text
    plain_section = text.split("40,000 target transitions\n")[1].split("\n### ")[0]
    assert "| 0: 100.0 |" in plain_section and "250.0" not in plain_section
    assert "lacks 58 of 60 valid points" in text  # the variant's redraw does not count


def test_adaptation_curves_are_averaged_over_seeds_at_the_updates_they_share(tmp_path):
    recs = [record("oracle", s, 400.0) for s in (0, 1)]
    recs += [record("redraw", 0, 300.0, heldout=[[0, 9.0], [500, 2.0], [1000, 3.0]], policy_curve=[[1000, 10.0], [2000, 50.0]]),
             record("redraw", 1, 320.0, heldout=[[0, 7.0], [500, 4.0], [1000, 5.0]],
                    policy_curve=[[1000, 30.0], [2000, 70.0], [3000, 90.0]]),
             record("draw_finetune", 0, 200.0, heldout=[[0, 9.0], [500, 1.0]]),
             record("draw_finetune", 1, 210.0, valid=False, heldout=[[0, 99.0], [500, 99.0]])]  # void: left out
    recs += [record("redraw", 0, 310.0, protocol="concurrent", heldout=[[0, 9.0], [500, 2.0]],
                    adapt_heldout=[[0, 2.0], [1000, 1.5], [2000, 1.0]])]
    text = build_report(write(tmp_path / "r.json", recs), tmp_path / "results.md").read_text()
    section = text.split("## Return and held-out dynamics error vs adaptation updates")[1].split("\n## ")[0]
    sequential, concurrent = section.split("protocol `sequential`")[1], section.split("protocol `concurrent`")[1]
    rows = {line.split("|")[1].strip(): line for line in sequential.split("###")[0].splitlines() if line.startswith("| ")}
    # redraw: held-out KL mean over seeds 8.0 -> lowest 3.0 at 500 -> 4.0; policy 20.0 -> 60.0 at 2,000 (seed 1's 3,000 unshared)
    assert "| 0, 1 | 8.00 → 3.00 (500) → 4.00 (1,000) | 20.0 → 60.0 (2,000) |" in rows["redraw"]
    assert "| 0 | 9.00 → 1.00 (500) → 1.00 (500) | – |" in rows["draw_finetune"]
    assert "99" not in section
    # concurrent: the policy stage's held-out points continue after the calibration's last update
    assert "9.00 → 1.00 (2,500) → 1.00 (2,500)" in concurrent
    assert len(list((tmp_path / "figures/results").glob("adaptation-*.png"))) == 2


@pytest.mark.parametrize("bad, message", [
    ({"method": "magic"}, "unknown method 'magic'"),
    ({"heldout": [[0, float("nan")]]}, "heldout must be a list of finite"),
    ({"policy_curve": [5000, 1.0]}, "policy_curve must be a list of finite"),
    ({"return_mean": float("nan")}, "return_mean is not finite"),
    ({"return_mean": None}, "return_mean must be float"),
    ({"drop": "episodes"}, "missing field 'episodes'"),
])
def test_a_bad_record_is_refused_naming_it_and_the_old_report_is_kept(tmp_path, bad, message):
    good = record("oracle", 0, 400.0)
    rec = {**record("redraw", 1, 300.0), **{k: v for k, v in bad.items() if k != "drop"}}
    rec.pop(bad.get("drop", "-"), None)
    results = write(tmp_path / "r.json", [good, rec])
    out = tmp_path / "results.md"
    out.write_text("the previous report\n")
    name = rf"pair='{PAIR}', seed=1, method='\w+', target_transitions=40000, protocol='sequential', " \
           "target_data='expert', preset='cpu'"
    with pytest.raises(ResultsError, match=rf"r\.json: records\[1\] \({name}\): .*{message}"):
        build_report(results, out)
    assert out.read_text() == "the previous report\n"
    proc = subprocess.run([sys.executable, "-m", "redraw.cli", "report", "--results", str(results), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "records[1]" in proc.stderr and message in proc.stderr


def round_record(seed, diff, logged_by="policy", **extra):
    part = lambda m: {"return_mean": m, "return_ci_low": m - 10.0, "return_ci_high": m + 10.0, "episodes": 100}  # noqa: E731
    return {"pair": PAIR, "seed": seed, "preset": "cpu", "method": "redraw", "logged_by": logged_by,
            "expert_episodes": 60, "policy_episodes": 20, "logged_return_mean": 70.0, "round0": part(100.0),
            "round1": part(100.0 + diff), "difference": part(diff), "commit": "abc1234", **extra}


def test_deploy_log_calibrate_rounds_beside_the_results_are_reported_with_their_mean_over_seeds(tmp_path):
    results = write(tmp_path / "transfer_quality.json", [record("redraw", 0, 300.0)])
    rounds = tmp_path / "onpolicy_round.json"
    rounds.write_text(json.dumps({"records": [round_record(1, 130.0), round_record(2, 150.0),
                                              round_record(1, -70.0, "expert")]}))
    text = build_report(results, tmp_path / "results.md").read_text()
    section = text[text.index("## Deploy, log, calibrate again"):]
    assert f"| {PAIR} | 2 | redraw | policy | 60 | 20 | 100.0 [90.0, 110.0] | 250.0 [240.0, 260.0] " \
           "| 150.0 [140.0, 160.0] |" in section
    half = mean_ci([130.0, 150.0])[1]
    assert f"| {PAIR} | redraw | policy | 60 | 20 | 2 | 140.0 ± {half:.1f} |" in section
    assert f"| {PAIR} | redraw | expert | 60 | 20 | 1 | -70.0 |" in section  # one seed: no interval
    assert "## Policy-stage variants" not in text
    variant = {**round_record(1, 30.0), "variant": "bc_weight=1"}
    variant["base"], variant["changed"] = variant.pop("round0"), variant.pop("round1")
    (tmp_path / "policy_variants.json").write_text(json.dumps({"records": [variant]}))
    text = build_report(results, tmp_path / "results.md").read_text()
    assert f"| {PAIR} | 1 | redraw | bc_weight=1 | 100.0 [90.0, 110.0] | 130.0 [120.0, 140.0] | 30.0 [20.0, 40.0] |" \
        in text[text.index("## Policy-stage variants"):]
    cloned = {**round_record(1, 120.0), "method": "no_adapt", "target_data": "expert", "target_transitions": 40000,
              "reference": "bc"}
    cloned["policy"], cloned["cloned"] = cloned.pop("round0"), cloned.pop("round1")
    (tmp_path / "bc_reference.json").write_text(json.dumps({"records": [cloned]}))
    text = build_report(results, tmp_path / "results.md").read_text()
    assert f"| {PAIR} | 1 | cpu | expert | 40000 | bc | no_adapt | 100.0 [90.0, 110.0] | 220.0 [210.0, 230.0] | 120.0 [110.0, 130.0] |" \
        in text[text.index("## Behaviour cloning without"):]
    rounds.unlink()
    assert "## Deploy, log" not in build_report(results, tmp_path / "results.md").read_text()


def test_the_cloned_reference_joins_its_pairs_table_and_redraw_is_judged_against_it(tmp_path):
    results = write(tmp_path / "transfer_quality.json",
                    [record("redraw", 1, 120.0), record("redraw", 2, 40.0), record("oracle", 1, 300.0),
                     record("oracle", 2, 250.0), record("redraw", 1, 99.0, target_transitions=10000)])
    part = lambda m: {"return_mean": m, "return_ci_low": m - 10.0, "return_ci_high": m + 10.0, "episodes": 100}  # noqa: E731
    cloned = [{"pair": PAIR, "seed": seed, "preset": "cpu", "target_data": "expert", "target_transitions": 40000,
               "reference": ref, "method": "redraw", "policy": part(pol), "cloned": part(clo),
               "difference": part(clo - pol)}
              for seed, pol, clo, ref in ((1, 120.0, 270.0, "bc"), (2, 40.0, 220.0, "bc"), (2, 40.0, 500.0, "bc_top50"))]
    (tmp_path / "bc_reference.json").write_text(json.dumps({"records": cloned}))
    text = build_report(results, tmp_path / "results.md").read_text()
    heading = "### preset `cpu`, target data `expert`, protocol `sequential`, "
    main = text[text.index(heading + "40,000"):]
    main = main[:main.index("## Return vs target-data size")]
    half = mean_ci([270.0, 220.0])[1]
    assert f"| cloned, no world model (reference) | 2 | 245.0 ± {half:.1f} | 1: 270.0, 2: 220.0 | 89% |" in main
    diff_half = mean_ci([-150.0, -180.0])[1]
    assert f"- ReDRAW above the cloned reference (not a claim of the paper): difference -165.0 ± {diff_half:.1f} " \
           "over seeds [1, 2] → **" in main
    other = text[text.index(heading + "10,000"):text.index(heading + "40,000")]  # no reference measured there
    assert "| redraw | 1 | 99.0 |" in other and "cloned, no world model" not in other
    del cloned[1]["target_transitions"]  # a record without its key is refused by name, not guessed
    (tmp_path / "bc_reference.json").write_text(json.dumps({"records": cloned}))
    with pytest.raises(ResultsError, match=r"bc_reference\.json: records\[1\].*target_transitions"):
        build_report(results, tmp_path / "results.md")


def test_a_bad_round_record_is_refused_naming_it(tmp_path):
    results = write(tmp_path / "transfer_quality.json", [record("redraw", 0, 300.0)])
    bad = round_record(1, 130.0)
    del bad["round1"]["return_ci_high"]
    (tmp_path / "onpolicy_round.json").write_text(json.dumps({"records": [round_record(2, 1.0), bad]}))
    with pytest.raises(ResultsError, match=r"onpolicy_round\.json: records\[1\]\.round1.*missing field 'return_ci_high'"):
        build_report(results, tmp_path / "results.md")


@pytest.mark.slow  # it needs the smoke pipeline's outputs (smoke_repo)
def test_the_smoke_pipelines_records_merge_into_the_results_file_and_make_a_report(smoke_repo, tmp_path):
    """What the benchmark (and the sweep) record from a finished pipeline directory, and from a
    stopped training's checkpoint."""
    from redraw.results_records import merge_results, protocol, training_records, workdir_records

    work = smoke_repo.path
    records, trainings = workdir_records(work, "abc1234")
    assert {t["training"] for t in trainings} == {"pretrain", "oracle", "pretrain_rssm"}
    assert all(t["finished"] and t["learned"] is False and t["threshold"] == 300.0 for t in trainings)
    assert all(t["final_episodes"] == 1 for t in trainings)  # how many episodes the verdict read
    evaluated = {p.stem for p in (work / "reports/evaluate").glob("*.json")} - {"source"}
    assert {r["method"] for r in records} == evaluated and "redraw" in evaluated
    assert all(r["valid"] is False for r in records)  # smoke trainings learn nothing: every point void
    redraw = next(r for r in records if r["method"] == "redraw")  # its curves, from the stages' reports
    assert [x for x, _ in redraw["policy_curve"]] == [10, 20] and redraw["heldout"][0][0] == 0
    assert "adapt_heldout" not in redraw and "heldout" not in next(r for r in records if r["method"] == "no_adapt")
    assert {(r["protocol"], r["target_data"], r["preset"], r["target_transitions"]) for r in records} == {
        ("sequential", "correlated", "smoke", 200)}
    assert protocol({"train_policy": {"adapt": True}, "calibrate": {"early_stop": True}}) == "concurrent+early_stop"
    results = tmp_path / "transfer_quality.json"
    merge_results(results, records, trainings)
    merge_results(results, records[:1], [])  # a record replaces the one with its key
    got_records, got_trainings = load_results(results)
    assert len(got_records) == len(records) and len(got_trainings) == 3
    text = build_report(results, tmp_path / "results.md").read_text()
    assert "| redraw | 0 (+1 void) |" in text and "| pretrain_rssm | smoke |" in text
    assert "| last eval return (episodes) |" in text and " (1) | 300 | **no** |" in text

    # a training stopped before its end: its curve comes from the stage checkpoint, not judged yet
    stopped = tmp_path / "stopped"
    (stopped / "reports").mkdir(parents=True)
    ckpt = next((work / "checkpoints").glob("pretrain-*/checkpoint.pt"))
    (stopped / "checkpoints" / ckpt.parent.name).mkdir(parents=True)
    shutil.copy(ckpt, stopped / "checkpoints" / ckpt.parent.name / "checkpoint.pt")
    (record_,) = training_records(stopped, PAIR, "pendulum-swingup", 0, "smoke", "abc1234")
    assert record_["training"] == "pretrain" and record_["finished"] is False and record_["learned"] is None
    assert record_["curve"] == next(t for t in trainings if t["training"] == "pretrain")["curve"]


# ---- the nested protocol: shipped source pretrainings x adaptation seeds -------------------------

RUNS = [(p, s) for p in (0, 1) for s in (0, 1, 2)]  # (pretrain seed, seed)
SPREAD = (-2.0, -1.0, 0.0, 1.0, 2.0, 0.0)  # one value per run, mean 0


def nested(method, pretrain_seed, seed, ret, pair=PAIR, **extra):
    return {**record(method, seed, ret, pair=pair, episodes=100), "pretrain_seed": pretrain_seed, **extra}


def cloned(pair, pretrain_seed, seed, ret, reference="bc", **extra):
    part = lambda m: {"return_mean": m, "return_ci_low": m - 1.0, "return_ci_high": m + 1.0, "episodes": 100}  # noqa: E731
    return {"pair": pair, "seed": seed, "pretrain_seed": pretrain_seed, "preset": "cpu", "target_data": "expert",
            "target_transitions": 40000, "reference": reference, "method": "redraw", "policy": part(1.0),
            "cloned": part(ret), "difference": part(ret - 1.0), **extra}


def test_interval_statistics_go_through_rliable_and_give_the_known_answer(monkeypatch):
    import numpy as np
    from rliable import library, metrics

    from redraw import stats

    calls = []
    real = library.get_interval_estimates
    monkeypatch.setattr(library, "get_interval_estimates", lambda *a, **k: calls.append(list(a[0])) or real(*a, **k))
    better = np.array([[5.0, 6.0], [7.0, 8.0], [6.0, 9.0]])
    worse = np.array([[-5.0, -4.0], [-3.0, -2.0]])  # fewer runs: each matrix is resampled on its own
    poi = stats.improvement_intervals({"x": (better, worse), "y": (worse, better), "same": (better, better)}, reps=200)
    assert poi["x"] == (1.0, 1.0, 1.0) and poi["y"] == (0.0, 0.0, 0.0) and poi["same"][0] == 0.5
    scores = np.arange(1.0, 9.0).reshape(4, 2)  # IQM of 1..8: the mean of 3, 4, 5, 6
    ((point, low, high),) = stats.iqm_intervals({"m": scores}, reps=200).values()
    assert point == 4.5 == metrics.aggregate_iqm(scores) and low < 4.5 < high
    assert calls == [["x", "y", "same"], ["m"]]
    rng = np.random.default_rng(0)  # the numpy forms the bootstrap uses are rliable's metrics
    for shape in ((5, 3), (4, 1), (1, 2)):
        x, y = rng.normal(size=shape).round(1), rng.normal(size=(shape[0] + 1, shape[1])).round(1)
        assert stats.iqm(x) == pytest.approx(metrics.aggregate_iqm(x))
        assert stats.improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
    state = np.random.get_state()[1].copy()  # the same scores give the same intervals; numpy's generator kept
    assert stats.iqm_intervals({"m": scores}, reps=200) == stats.iqm_intervals({"m": scores}, reps=200)
    assert (np.random.get_state()[1] == state).all()
    profile, low, high = stats.performance_profiles({"m": scores}, np.array([0.0, 4.5, 8.0]), reps=100)["m"]
    assert profile.tolist() == [1.0, 0.5, 0.0] and (low <= profile).all() and (profile <= high).all()


def test_runs_needed_is_where_the_t_interval_decides():
    from scipy.stats import t

    from redraw.stats import runs_needed

    values = [1.0, 2.0, 3.0]  # mean 2, sd 1: the interval excludes 0 from n = 4 on (t(3) / 2 < 2, t(2) / sqrt 3 > 2)
    assert t.ppf(0.975, 2) / 3 ** 0.5 > 2 > t.ppf(0.975, 3) / 2
    assert runs_needed(values) == 4
    assert runs_needed([5.0, 7.0, 6.0, 6.0]) == 4  # decided already
    assert runs_needed([1.0, -1.0, 1.0, -1.0]) is None  # a mean on the line never excludes it
    assert runs_needed([1.0, -1.0, 1.0, -1.0], margin=10.0) == 4  # [-1.8, 1.8] lies within ±10 already
    assert runs_needed([9.0]) is None


def _row(text: str, start: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(start))
    return [c.strip() for c in line.split("|")[1:-1]]


def test_the_nested_comparison_answers_per_pair_and_overall(tmp_path):
    import numpy as np
    from rliable import metrics
    from scipy.stats import t

    pairs = {PAIR: 400.0, "cup-catch-windy": 500.0}
    recs, clones = [], []
    for pair, expert in pairs.items():
        for (p, s), d in zip(RUNS, SPREAD):
            redraw = expert * (0.9 + 0.02 * d)
            recs += [nested("oracle", p, s, expert, pair), nested("redraw", p, s, redraw, pair),
                     nested("no_adapt", p, s, expert * (0.1 + 0.01 * d), pair),
                     nested("draw_finetune", p, s, redraw - expert * 0.01 * (d - 0.5), pair)]  # within ±10%: equal
            # dreamer_finetune's pretraining did not learn on the first pair: void, never averaged in
            recs.append(nested("dreamer_finetune", p, s, 999.0 if pair == PAIR else redraw + expert * 0.3 * (d or 1),
                               pair, valid=pair != PAIR))
            clones += [cloned(pair, p, s, redraw + expert * (0.2 + 0.01 * d)),  # the cloned reference is better
                       cloned(pair, p, s, redraw + expert * (0.2 + 0.01 * d), "bc_top50")]
    # a third pair whose expert did not learn: listed, never normalised or averaged in
    third = "finger-turn_hard-torque"
    recs += [nested(m, p, s, base + 10 * d * (m != "no_adapt"), third, valid=m != "oracle")
             for (p, s), d in zip(RUNS, SPREAD)
             for m, base in (("oracle", 300.0), ("redraw", 200.0), ("no_adapt", 100.0))]
    results = write(tmp_path / "transfer_quality.json", recs)
    (tmp_path / "bc_reference.json").write_text(json.dumps({"records": clones}))
    text = build_report(results, tmp_path / "results.md", reps=200).read_text()
    section = text[text.index("## The nested comparison"):text.index("## What is missing")]
    assert "999" not in section and "| dreamer_finetune | 0 (+6 void) | – | – |" in section

    row = _row(section, f"| (a) | {PAIR} |")  # draw_finetune, dreamer_finetune, no_adapt, bc, bc_top50, >= 80%
    assert row[2].startswith("**no**, equal within ±10% (") and row[3] == "void"
    assert row[4].startswith("**yes** (")
    assert row[5].startswith("**no**, worse (") and row[6].startswith("**no**, worse")
    shares = [90 + 2 * d for d in SPREAD]  # ReDRAW's % of the expert per run
    half = t.ppf(0.975, 5) * np.std(shares, ddof=1) / 6 ** 0.5
    assert row[7] == f"**yes** (90.0 [{90 - half:.1f}, {90 + half:.1f}]%)"
    assert _row(section, "| (a) | cup-catch-windy |")[3].startswith("undecided")  # ±30% of the expert: too wide
    row = _row(section, f"| (a) | {third} |")  # comparisons in returns only; no share without an expert
    assert row[0] == "(a)" and row[4].startswith("**yes** (+") and row[4].endswith(" return)") and row[7] == "–"
    assert f"ReDRAW ≥ 80% of the expert: – (the expert is void (its training did not learn)).\n" in section

    overall = _row(section, "| (a) | **all pairs** (IQM) |")
    assert overall[2].startswith("**no**, equal") and overall[3] == "–" and overall[4].startswith("**yes**")
    assert overall[5].startswith("**no**, worse") and overall[7].startswith("**yes**")
    assert f"Across pairs (cup-catch-windy, {PAIR}):" in section  # the third pair is not among them
    iqm = metrics.aggregate_iqm(np.array([shares, shares]).T)
    assert _row(section, "| redraw | 6 |")[2].startswith(f"{iqm:.1f} [")
    assert _row(section, "| no_adapt | 6 |")[3] == "1.00 [1.00, 1.00]"  # P(ReDRAW > no_adapt): every run above
    assert _row(section, "| bc | 6 |")[3] == "0.00 [0.00, 0.00]"
    assert f"| dreamer_finetune | – | not on every pair (none valid on {PAIR}) | – |" in section
    assert "Regime (a): The paper's claim" in section and "**does not hold**" in section
    for name in ("iqm", "improvement", "a-profiles"):
        assert (tmp_path / f"figures/results/nested-cpu-sequential-{name}.png").stat().st_size > 0


def test_nested_records_are_never_pooled_across_protocols_or_with_older_records(tmp_path):
    recs = [nested(m, p, s, v + d, protocol=protocol) for (p, s), d in zip(RUNS, SPREAD)
            for protocol, share in (("sequential", 0.9), ("concurrent", 0.3))
            for m, v in (("oracle", 400.0), ("redraw", 400.0 * share))]
    recs += [record("redraw", 0, 5.0), record("oracle", 0, 400.0)]  # older: no pretrain seed
    older = {k: v for k, v in cloned(PAIR, 0, 0, 50.0).items() if k != "pretrain_seed"}
    clones = [older, *(cloned(PAIR, p, s, 300.0 + d) for (p, s), d in zip(RUNS, SPREAD))]
    (tmp_path / "bc_reference.json").write_text(json.dumps({"records": clones}))
    text = build_report(write(tmp_path / "transfer_quality.json", recs), tmp_path / "results.md", reps=200).read_text()
    nested_part = text[:text.index("## What is missing")]
    sequential = nested_part[nested_part.index("### Nested: preset `cpu`, protocol `sequential`"):]
    concurrent = nested_part[nested_part.index("### Nested: preset `cpu`, protocol `concurrent`"):]
    concurrent, sequential = (concurrent.split("### Nested")[1], sequential.split("### Nested")[1])
    assert _row(sequential, "| redraw | 6 |")[2].startswith("90.0 [")
    assert _row(concurrent, "| redraw | 6 |")[2].startswith("30.0 [")
    assert _row(sequential, "| (a) | **all pairs** (IQM) |")[-1].startswith("**yes**")
    assert _row(concurrent, "| (a) | **all pairs** (IQM) |")[-1].startswith("**no**")
    transfer = text[text.index("## Transfer"):text.index("## Return vs target-data size")]
    assert "| redraw | 1 | 5.0 | 0: 5.0 |" in transfer and "360" not in transfer and "120" not in transfer
    assert "| cloned, no world model (reference) | 1 | 50.0 |" in transfer  # the older run's cloning only
    assert _row(sequential, "| bc | 6 |")[2].startswith("75.0 [")  # the nested runs' cloning: 300 of 400
    cloning = text[text.index("## Behaviour cloning"):]
    assert f"| {PAIR} | seed | cpu | expert | 40000 | bc | redraw | 1 | 49.0 |" in cloning
    assert f"| {PAIR} | pretrain seed x seed | cpu | expert | 40000 | bc | redraw | 6 | 299.0 ± " in cloning


@pytest.mark.parametrize("bad, message", [
    ({"method": "magic"}, "unknown method 'magic'"),
    ({"target_data": "expert+noise0.5"}, "unknown regime (target_data 'expert+noise0.5', target_transitions 40000"),
    ({"target_transitions": 10000}, "unknown regime (target_data 'expert', target_transitions 10000, round 0)"),
    ({"target_transitions": 5000, "round": 1},
     "unknown regime (target_data 'expert', target_transitions 5000, round 1)"),
    ({"round": -1}, "round must be an integer >= 0"),
    ({"drop": "valid"}, "missing field 'valid'"),
    ({"drop": "target_data"}, "missing field 'target_data'"),
    ({"return_mean": float("inf")}, "return_mean is not finite"),
    ({"pretrain_seed": "1"}, "pretrain_seed must be int"),
])
def test_a_bad_nested_record_is_refused_naming_it(tmp_path, bad, message):
    import re

    rec = {**nested("redraw", 1, 2, 300.0), **{k: v for k, v in bad.items() if k != "drop"}}
    rec.pop(bad.get("drop", "-"), None)
    results = write(tmp_path / "r.json", [nested("oracle", 1, 2, 400.0), rec])
    with pytest.raises(ResultsError, match=rf"r\.json: records\[1\] \(pair='{PAIR}', seed=2, method='\w+', .*"
                                           rf"pretrain_seed='?1'?.*\): .*{re.escape(message)}"):
        build_report(results, tmp_path / "results.md", reps=50)
    for regime in ({"target_data": "source_policy"}, {"target_transitions": 5000}, {"round": 1},
                   {"target_data": "source_policy", "round": 2}):  # every known regime is taken
        load_results(write(tmp_path / "ok.json", [{**nested("redraw", 1, 2, 300.0), **regime}]))


def test_a_cloned_reference_of_unknown_kind_is_refused_naming_it(tmp_path):
    results = write(tmp_path / "transfer_quality.json", [nested("redraw", 0, 0, 300.0)])
    (tmp_path / "bc_reference.json").write_text(json.dumps({"records": [cloned(PAIR, 0, 0, 1.0, "bc_top10")]}))
    name = rf"pair='{PAIR}', seed=0, method='redraw', pretrain_seed=0, .*reference='bc_top10'"
    with pytest.raises(ResultsError, match=rf"bc_reference\.json: records\[0\] \({name}\): unknown reference 'bc_top10'"):
        build_report(results, tmp_path / "results.md", reps=50)

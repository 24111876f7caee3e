"""The results files the benchmarks merge into (``redraw.results_records.merge_keyed``): what one benchmark
run writes must survive another finishing at the same moment."""

from __future__ import annotations

import json
import multiprocessing

from redraw.results_records import merge_keyed

KEY = ("pair", "seed")


def _merge_many(path, worker: int, n: int) -> None:
    for i in range(n):
        merge_keyed(path, {"records": (KEY, [{"pair": f"w{worker}", "seed": i}])})


def test_processes_merging_at_once_lose_no_record(tmp_path):
    path = tmp_path / "results.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_merge_many, args=(path, w, 15)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = json.loads(path.read_text())["records"]
    assert sorted((r["pair"], r["seed"]) for r in rows) == [(f"w{w}", i) for w in range(3) for i in range(15)]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))  # no half-written file left


def test_a_row_replaces_the_one_with_its_key_and_other_sections_are_kept(tmp_path):
    path = tmp_path / "results.json"
    merge_keyed(path, {"records": (KEY, [{"pair": "a", "seed": 1, "v": 1}]), "trainings": (KEY, [{"pair": "t", "seed": 0}])})
    merge_keyed(path, {"records": (KEY, [{"pair": "a", "seed": 1, "v": 2}, {"pair": "a", "seed": 0, "v": 3}])})
    data = json.loads(path.read_text())
    assert data["records"] == [{"pair": "a", "seed": 0, "v": 3}, {"pair": "a", "seed": 1, "v": 2}]
    assert data["trainings"] == [{"pair": "t", "seed": 0}]
    assert path.read_text().count("\n") >= 5  # one row a line: a diff shows which runs changed


def test_a_list_file_merges_as_one_list(tmp_path):
    path = tmp_path / "runs.json"
    merge_keyed(path, {None: (KEY, [{"pair": "b", "seed": 2}])})
    merge_keyed(path, {None: (KEY, [{"pair": "b", "seed": 1}, {"pair": "b", "seed": 2, "x": 1}])})
    assert json.loads(path.read_text()) == [{"pair": "b", "seed": 1}, {"pair": "b", "seed": 2, "x": 1}]


def test_pretrain_seed_is_read_from_the_shipped_source_pretrainings_name():
    import pytest

    from redraw.results_records import pretrain_seed

    assert pretrain_seed({"pretrained": {"source": "reacher-easy-reversed/source-1"}}) == 1
    assert pretrain_seed({"pretrained": {"source": "cup-catch-windy/source-12"}}) == 12
    assert pretrain_seed({"pretrained": {"source": ""}}) is None
    assert pretrain_seed({"pretrained": {}}) is None and pretrain_seed({}) is None
    with pytest.raises(ValueError, match="'reacher-easy-reversed/expert-0' is not a shipped source"):
        pretrain_seed({"pretrained": {"source": "reacher-easy-reversed/expert-0"}})


def test_records_of_other_pretrain_seeds_or_rounds_are_kept_beside_each_other(tmp_path):
    from redraw.results_records import CLONE_KEY, merge_results

    path = tmp_path / "transfer_quality.json"
    base = {"pair": "p", "seed": 0, "method": "redraw", "target_transitions": 40000, "protocol": "sequential",
            "target_data": "expert", "preset": "cpu", "return_mean": 1.0}
    training = {"pair": "p", "seed": 0, "training": "pretrain", "preset": "cpu", "final_return": 1.0}
    merge_results(path, [{**base, "pretrain_seed": 0}], [{**training, "pretrain_seed": 0}])
    merge_results(path, [{**base, "pretrain_seed": 1}, {**base, "pretrain_seed": 1, "round": 1}],
                  [{**training, "pretrain_seed": 1}])
    merge_results(path, [base], [training])  # an older record without one: a third run
    merge_results(path, [{**base, "pretrain_seed": 1, "return_mean": 2.0}], [])  # replaces its own key only
    data = json.loads(path.read_text())
    got = sorted((r.get("pretrain_seed", -1), r.get("round", 0), r["return_mean"]) for r in data["records"])
    assert got == [(-1, 0, 1.0), (0, 0, 1.0), (1, 0, 2.0), (1, 1, 1.0)]
    assert sorted(t.get("pretrain_seed", -1) for t in data["trainings"]) == [-1, 0, 1]
    clones = tmp_path / "bc_reference.json"
    clone = {"pair": "p", "seed": 0, "preset": "cpu", "target_data": "expert", "target_transitions": 40000,
             "reference": "bc", "method": "redraw"}
    for row in ({**clone, "pretrain_seed": 0}, {**clone, "pretrain_seed": 1}, clone):
        merge_keyed(clones, {"records": (CLONE_KEY, [row])})
    assert sorted(r.get("pretrain_seed", -1) for r in json.loads(clones.read_text())["records"]) == [-1, 0, 1]


def test_regime_names_the_nested_protocols_data_settings():
    from redraw.results_records import REGIMES, regime

    def rec(data, n, **extra):
        return {"target_data": data, "target_transitions": n, **extra}

    assert regime(rec("expert", 40000)) == "a" and regime(rec("expert", 40000, round=0)) == "a"
    assert regime(rec("source_policy", 40000)) == "b"
    assert regime(rec("expert", 5000)) == "c"
    assert regime(rec("expert", 40000, round=1)) == "d-a" and regime(rec("source_policy", 40000, round=2)) == "d-b"
    assert regime(rec("expert", 5000, round=1)) is None  # no calibrate-again round on the low-data regime
    assert regime(rec("expert+noise0.5", 40000)) is None and regime(rec("expert", 10000)) is None
    assert regime({}) is None
    assert set(REGIMES) == {"a", "b", "c", "d-a", "d-b"}


def test_records_made_from_a_work_dir_carry_its_pretrain_seed(tmp_path):
    import yaml

    from redraw.results_records import method_records, training_records

    params = {"seed": 3, "pretrained": {"source": "reacher-easy-reversed/source-1"},
              "train_policy": {}, "calibrate": {}, "pretrain": {"eval_episodes": 10},
              "collect_target": {"transitions": 40000,
                                 "behaviour": {"kind": "policy", "checkpoint": "models/oracle/agent.pt"}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "reports/evaluate").mkdir(parents=True)
    (tmp_path / "reports/evaluate/redraw.json").write_text(
        json.dumps({"return_mean": 100.0, "return_std": 5.0, "episodes": 100}))
    (tmp_path / "reports/pretrain_curve.json").write_text(json.dumps([{"step": 1000, "eval_return": 400.0}]))
    trainings = training_records(tmp_path, "reacher-easy-reversed", "reacher-easy", 3, "cpu", "abc")
    records = method_records(tmp_path, "reacher-easy-reversed", 3, "cpu", trainings, "abc")
    assert [(t["training"], t["pretrain_seed"], t["learned"]) for t in trainings] == [("pretrain", 1, True)]
    assert [(r["method"], r["pretrain_seed"], r["target_data"], r["valid"]) for r in records] == [
        ("redraw", 1, "expert", True)]
    params["pretrained"]["source"] = ""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (training,) = training_records(tmp_path, "reacher-easy-reversed", "reacher-easy", 3, "cpu", "abc")
    assert training["pretrain_seed"] is None
    assert method_records(tmp_path, "reacher-easy-reversed", 3, "cpu", trainings, "abc")[0]["pretrain_seed"] is None

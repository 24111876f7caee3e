"""The results files the benchmarks merge into (``redraw.records.merge_keyed``): what one benchmark
run writes must survive another finishing at the same moment."""

from __future__ import annotations

import json
import multiprocessing

from redraw.records import merge_keyed

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

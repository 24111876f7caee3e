"""redraw repro: the stage levels come from DVC's graph, and a failing stage names its log."""

import contextlib
import re
import subprocess
import sys

import pytest

from conftest import make_repo
from redraw import scheduler


def test_stage_graph_is_dvcs_own_and_the_three_trainings_need_only_the_collections(tmp_path):
    from dvc.repo import Repo

    repo = make_repo(tmp_path / "repo")
    needs = scheduler.stage_graph(repo)
    with contextlib.chdir(repo), Repo(".") as dvc_repo:  # addresses are relative to the working directory
        graph = dvc_repo.index.graph
        assert needs == {s.addressing: {d.addressing for d in graph.successors(s)} for s in graph.nodes}
    assert needs["pretrain"] == needs["pretrain_rssm"] == {"collect_source"} and needs["oracle"] == {"collect_oracle"}
    assert "pretrain_rssm" in needs["calibrate@dreamer_finetune"] and "pretrain_rssm" not in needs["calibrate@redraw"]
    assert scheduler.upstream(needs, ["calibrate@redraw"]) >= {"calibrate@redraw", "pretrain", "validate_target",
                                                              "collect_target", "oracle", "collect_source"}
    assert not any(name.startswith(("evaluate", "train_policy")) for name in scheduler.upstream(needs, ["calibrate@redraw"]))


def toy_repo(path, stages: dict[str, tuple[list[str], float, int]]):
    """A git + DVC repository whose stages (name -> (stages it needs, seconds, exit code)) stamp
    their start and end in times.txt and write out/<name>."""
    import yaml

    path.mkdir(parents=True)
    stamp = ("import sys, time; log = open('times.txt', 'a'); log.write(f'start {sys.argv[1]} {time.time()}\\n'); "
             "log.flush(); time.sleep(float(sys.argv[2])); print('stage', sys.argv[1], 'said hello'); "
             "sys.exit(int(sys.argv[3])) if int(sys.argv[3]) else None; open(f'out/{sys.argv[1]}', 'w').write('x'); "
             "log.write(f'end {sys.argv[1]} {time.time()}\\n')")
    (path / "stamp.py").write_text(stamp)
    (path / "out").mkdir()
    spec = {name: {"cmd": f"{sys.executable} stamp.py {name} {seconds} {code}",
                   "deps": ["stamp.py", *(f"out/{d}" for d in needs)], "outs": [f"out/{name}"]}
            for name, (needs, seconds, code) in stages.items()}
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": spec}))
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=path, check=True)
    return path


def stamps(repo) -> dict[tuple[str, str], float]:
    return {(kind, name): float(t) for kind, name, t in (line.split() for line in (repo / "times.txt").read_text().splitlines())}


def test_a_stage_starts_as_soon_as_the_stages_it_needs_are_done(tmp_path):
    """slow and quick need nothing, after_quick needs quick: with two jobs after_quick starts
    while slow still runs (level by level it would wait for slow); every stage is recorded in
    dvc.lock, and a second run finds everything up to date."""
    from dvc.repo import Repo

    repo = toy_repo(tmp_path / "r", {"slow": ([], 4, 0), "quick": ([], 0, 0), "after_quick": (["quick"], 0, 0),
                                     "last": (["slow", "after_quick"], 0, 0)})
    ran = scheduler.schedule(repo, 2, "logs")
    assert sorted(ran) == ["after_quick", "last", "quick", "slow"]
    t = stamps(repo)
    assert t[("start", "after_quick")] < t[("end", "slow")]
    assert t[("start", "last")] >= max(t[("end", "slow")], t[("end", "after_quick")])
    with contextlib.chdir(repo), Repo(".") as dvc_repo:
        assert dvc_repo.status() == {}  # recorded as dvc repro would have
    assert scheduler.schedule(repo, 2, "logs") == []
    assert "said hello" in (repo / "logs/slow.log").read_text()
    # a changed dependency: the stage runs again, its old output removed first as dvc repro does
    # (a stage that refuses to overwrite its output, as the collections do, still runs)
    (repo / "stamp.py").write_text("import os, sys; assert not os.path.exists(f'out/{sys.argv[1]}'), 'output left in place'\n"
                                   + (repo / "stamp.py").read_text())
    assert sorted(scheduler.schedule(repo, 2, "logs")) == ["after_quick", "last", "quick", "slow"]


def test_a_relative_root_runs_every_stage_in_that_repository(tmp_path, monkeypatch, capsys):
    """The scheduler's DVC calls change the process's directory while stage threads start their
    commands: a root given relative to the caller's directory still finds every stage's command
    (resolved against wherever DVC left the process, it would name the repository twice). Each
    stage says how long it took."""
    toy_repo(tmp_path / "r", {"a": ([], 0.5, 0), "b": ([], 0.5, 0), "c": (["a"], 0, 0), "d": (["b", "c"], 0, 0)})
    monkeypatch.chdir(tmp_path)
    assert sorted(scheduler.schedule("r", 2, "logs")) == ["a", "b", "c", "d"]
    assert all((tmp_path / "r/out" / name).exists() for name in "abcd")
    assert (tmp_path / "r/logs/d.log").is_file() and not (tmp_path / "logs").exists()
    assert re.search(r"^   d: done in \d+ s$", capsys.readouterr().out, re.M)


def test_targets_bring_only_themselves_and_what_they_need_up_to_date(tmp_path):
    repo = toy_repo(tmp_path / "r", {"a": ([], 0, 0), "b": (["a"], 0, 0), "other": ([], 0, 0)})
    assert sorted(scheduler.schedule(repo, 2, "logs", ["b"])) == ["a", "b"]
    assert not (repo / "out/other").exists()
    with pytest.raises(ValueError, match="unknown stage.*nope"):
        scheduler.schedule(repo, 2, "logs", ["nope"])


def test_a_failing_stage_names_its_log_the_others_finish_and_nothing_after_it_runs(tmp_path):
    repo = toy_repo(tmp_path / "r", {"ok": ([], 1, 0), "bad": ([], 0, 3), "after_bad": (["bad"], 0, 0)})
    with pytest.raises(RuntimeError, match=r"stage bad failed \(exit 3\); its log .*bad\.log ends:\nstage bad said hello"):
        scheduler.schedule(repo, 2, "logs")
    assert (repo / "out/ok").exists() and not (repo / "out/after_bad").exists()
    assert ("start", "after_bad") not in stamps(repo)
    assert scheduler.schedule(repo, 2, "logs", ["ok"]) == []  # ok was recorded when it finished


def test_the_longest_stages_start_first_when_jobs_are_short(tmp_path):
    """With fewer jobs than ready stages, the RSSM pretraining (the longest) starts first, not
    after the two DRAW trainings; stages the table does not know keep their order after it."""
    assert scheduler.longest_first(["oracle", "pretrain", "pretrain_rssm"]) == ["pretrain_rssm", "pretrain", "oracle"]
    assert scheduler.longest_first(["evaluate@redraw", "train_policy@dreamer_finetune", "evaluate@a"]) == [
        "train_policy@dreamer_finetune", "evaluate@redraw", "evaluate@a"]
    repo = toy_repo(tmp_path / "r", {name: ([], 0.2, 0) for name in ("oracle", "pretrain", "pretrain_rssm")})
    assert scheduler.schedule(repo, 1, "logs") == ["pretrain_rssm", "pretrain", "oracle"]

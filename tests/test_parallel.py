"""redraw repro: the stage levels come from DVC's graph, and a failing stage names its log."""

import contextlib
import sys

import networkx as nx
import pytest

from conftest import make_repo
from redraw import parallel


def test_stage_levels_put_every_stage_after_the_stages_it_needs(tmp_path):
    from dvc.repo import Repo

    repo = make_repo(tmp_path / "repo")
    levels = parallel.stage_levels(repo)
    level_of = {name: i for i, names in enumerate(levels) for name in names}
    with contextlib.chdir(repo), Repo(".") as dvc_repo:  # addresses are relative to the working directory
        graph = dvc_repo.index.graph
        names = {stage.addressing for stage in graph.nodes}
        assert set(level_of) == names and sum(map(len, levels)) == len(names)  # each stage once
        for stage in graph.nodes:
            for needed in nx.descendants(graph, stage):
                assert level_of[needed.addressing] < level_of[stage.addressing], (needed.addressing, stage.addressing)
    assert {"collect_source", "collect_oracle"} <= set(levels[0])
    assert {"pretrain", "oracle", "pretrain_rssm"} <= set(levels[1])  # the three trainings side by side
    assert level_of["results"] > max(level_of[n] for n in names if n.startswith("evaluate@"))


def test_a_failing_stage_names_its_log_and_the_others_finish(tmp_path):
    ok = [sys.executable, "-c", "import time; time.sleep(0.5); open('ok.txt', 'w').write('done')"]
    bad = [sys.executable, "-c", "import sys; print('something broke'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"stage bad failed \(exit 3\); its log .*bad\.log ends:\nsomething broke"):
        parallel.side_by_side(tmp_path, 2, {"ok": ok, "bad": bad}, tmp_path / "logs")
    assert (tmp_path / "ok.txt").read_text() == "done"


def test_a_level_starts_its_longest_stages_first(tmp_path):
    """With fewer jobs than stages, the RSSM pretraining (the longest) starts with the first job,
    not after the two DRAW trainings; stages the table does not know keep their order after it."""
    assert parallel.longest_first(["oracle", "pretrain", "pretrain_rssm"]) == ["pretrain_rssm", "pretrain", "oracle"]
    assert parallel.longest_first(["evaluate@redraw", "train_policy@dreamer_finetune", "evaluate@a"]) == [
        "train_policy@dreamer_finetune", "evaluate@redraw", "evaluate@a"]
    stamp = "import sys, time; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n'); time.sleep(0.3)"
    order = tmp_path / "order.txt"
    commands = {name: [sys.executable, "-c", stamp, str(order), name] for name in ("oracle", "pretrain", "pretrain_rssm")}
    parallel.side_by_side(tmp_path, 1, commands, tmp_path / "logs")
    assert order.read_text().split() == ["pretrain_rssm", "pretrain", "oracle"]

"""redraw.experiments.adaptation_length: long calibrations on a pipeline directory's data, recorded per
method and target-data size, resumed rather than rerun, and the report built from the records."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from synthetic import make_dataset
from test_agent import agent
from test_protocol import save_agent

ROOT = Path(__file__).resolve().parents[1]


def pipeline_dir(path: Path) -> Path:
    """What a finished pipeline directory holds for calibration: the pretrained model, validated
    target data (6 episodes of 40 steps, one held out) and its params."""
    from redraw.data.episodes import dataset_fingerprint

    make_dataset(path / "data/target", episodes=6, steps=40)
    (path / "reports/validation").mkdir(parents=True)
    (path / "reports/validation/result.json").write_text(json.dumps(
        {"data_dir": "data/target", "success": True, "data_fingerprint": dataset_fingerprint(path / "data/target")}))
    torch.manual_seed(0)
    save_agent(agent(), path / "models/pretrain/agent.pt")
    shutil.copy(ROOT / "envs.yaml", path)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(seed=3, target_data="data/target", target_transitions=0, preset="tiny")
    params["env"].update(source="pendulum-swingup", target="pendulum-swingup-reversed")
    params["calibrate"].update(batch_size=2, batch_length=16, holdout_episodes=1, gap_context=3, gap_horizon=8)
    params["calibrate"]["residual"]["hidden"] = 16
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    (path / "COMMIT").write_text("abc1234\n")
    return path


def run(*args):
    return subprocess.run([sys.executable, "-m", "redraw.experiments.adaptation_length", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_long_calibrations_are_recorded_per_method_and_size_and_not_run_twice(tmp_path):
    work = pipeline_dir(tmp_path / "work")
    results = tmp_path / "adaptation_length.json"
    args = ["--workdir", work, "--methods", "redraw", "draw_finetune", "--transitions", 100, 40, "--updates", 6,
            "--gap-every", 3, "--jobs", 2, "--results", results]
    proc = run(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = json.loads(results.read_text())
    assert sorted((r["method"], r["requested_transitions"]) for r in records) == [
        ("draw_finetune", 40), ("draw_finetune", 100), ("redraw", 40), ("redraw", 100)]
    for r in records:
        assert [p[0] for p in r["heldout"]] == [0, 3, 6]  # held-out KL before, and every 3 updates
        assert (r["pair"], r["seed"], r["preset"], r["pretraining_commit"], r["finished"]) == (
            "pendulum-swingup-reversed", 3, "tiny", "abc1234", True)
        assert r["commit"] == subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                             text=True).stdout.strip() + ("+dirty" if "+dirty" in r["commit"] else "")
        # whole episodes of 40 transitions up to the budget (the last may cross it): 3 for 100, 1 for 40
        assert r["train_transitions"] == {100: 120, 40: 40}[r["requested_transitions"]]
    before = {r["method"]: r["heldout"][0][1] for r in records}
    assert before["redraw"] == before["draw_finetune"]  # the same pretrained model on the same held-out data

    logs = sorted(work.glob("adaptation_length/*/calibrate.log"))
    sizes = [p.stat().st_size for p in logs]
    again = run(*args)  # finished runs are recorded again, never rerun
    assert again.returncode == 0 and [p.stat().st_size for p in logs] == sizes
    assert json.loads(results.read_text()) == records
    status = run("--workdir", work, "--status")
    assert status.returncode == 0 and status.stdout.count(": finished, 6 updates in ") == 4, status.stdout

    # a run stopped before its end is recorded from its checkpoint, marked unfinished
    shutil.copytree(work / "adaptation_length/redraw-100-6", work / "adaptation_length/redraw-100-20", symlinks=True)
    assert run("--workdir", work, "--harvest", "--results", results).returncode == 0
    stopped = [r for r in json.loads(results.read_text()) if r["updates"] == 20]
    assert [(r["finished"], r["updates_done"], [p[0] for p in r["heldout"]]) for r in stopped] == [(False, 6, [0, 3, 6])]
    assert all(r["finished"] for r in json.loads(results.read_text()) if r["updates"] == 6)


    report = subprocess.run([sys.executable, "-c", (
        "from redraw.experiments import adaptation_length as a; from pathlib import Path; "
        f"a.report(Path({str(results)!r}), Path({str(tmp_path / 'report.md')!r}), Path({str(tmp_path / 'fig')!r}))")],
        cwd=ROOT, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report.md").read_text()
    assert "## pendulum-swingup-reversed, seed 3, `tiny` preset" in text and text.count("| redraw |") == 2
    assert "| redraw (stopped at 6 of 20) | ~100 |" in text
    assert (tmp_path / "fig/pendulum-swingup-reversed-seed3-tiny.png").stat().st_size > 0

    # a stopped run goes on with the code it started with (the work dir's snapshot of it), not the
    # checkout's, so no curve mixes two codes; where that snapshot is gone it is refused
    stopped_run = work / "adaptation_length/redraw-100-20"
    (stopped_run / "CODE").write_text("old1234\n")
    resume = ["--workdir", work, "--methods", "redraw", "--transitions", 100, "--updates", 20, "--gap-every", 3,
              "--jobs", 1, "--results", results]
    gone = run(*resume)
    assert gone.returncode == 1 and "stopped on the code of old1234, whose snapshot" in gone.stdout
    (snapshot,) = work.glob("adaptation_length/src-*")
    shutil.copytree(snapshot, work / "adaptation_length/src-old1234")
    resumed = run(*resume)
    assert resumed.returncode == 0 and "resuming on its own code of old1234" in resumed.stdout, resumed.stdout
    (r,) = [r for r in json.loads(results.read_text()) if r["updates"] == 20]
    assert (r["commit"], r["finished"], r["heldout"][-1][0]) == ("old1234", True, 20)


def test_a_directory_without_its_pretraining_is_refused_naming_the_file(tmp_path):
    work = pipeline_dir(tmp_path / "work")
    proc = run("--workdir", work, "--methods", "dreamer_finetune", "--results", tmp_path / "r.json")
    assert proc.returncode == 2 and "models/pretrain_rssm/agent.pt" in proc.stderr
    assert not (tmp_path / "r.json").exists() and not (work / "adaptation_length").exists()
    assert "no adaptation runs yet" in run("--workdir", work, "--status").stdout

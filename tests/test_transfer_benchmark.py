"""The quality benchmark's own settings: ``--set`` overrides reach the work directory's params."""

import subprocess
import sys
from pathlib import Path

import pytest

from redraw.config import ConfigError, load_params
from redraw.experiments import transfer_quality

ROOT = Path(__file__).resolve().parents[1]


def test_set_parses_dotted_keys_with_yaml_values():
    assert transfer_quality.parse_set(["pretrain.imag_clip=true", "seed=3", "env.obs_mode=proprio"]) == {
        "pretrain.imag_clip": True, "seed": 3, "env.obs_mode": "proprio"}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        transfer_quality.parse_set(["pretrain.imag_clip"])


def test_source_policy_data_have_work_dirs_of_their_own(tmp_path):
    """Regime (b): the source policy collects the target data, in ``...-source_policy`` work dirs,
    so a run of it never resumes or harvests the expert-data regime's work dir of the same seed."""
    from redraw.results_records import REGIMES, target_data

    expert = tmp_path / "pendulum-swingup-reversed" / transfer_quality.workdir_name("smoke", 4)
    source = tmp_path / "pendulum-swingup-reversed" / transfer_quality.workdir_name("smoke", 4, None, "source_policy")
    assert source.name == "smoke-seed4-source_policy" and expert.name == "smoke-seed4"
    transfer_quality.prepare(expert, "smoke", 4, None, "expert")
    transfer_quality.prepare(source, "smoke", 4, None, "source_policy")
    params = load_params(source / "params.yaml")
    assert params["collect_target"]["behaviour"]["checkpoint"] == "models/pretrain/agent.pt"
    assert target_data(params) == REGIMES["b"][0] and target_data(load_params(expert / "params.yaml")) == "expert"
    assert transfer_quality.work_dirs(tmp_path, "smoke") == [expert, source]


def test_overrides_win_over_the_preset_and_unknown_keys_are_refused(tmp_path):
    work = tmp_path / "smoke-seed4"
    transfer_quality.prepare(work, "smoke", 4, 300, "expert", transfer_quality.METHODS, 0.5,
                             {"pretrain.imag_clip": True, "pretrain.steps": 123})
    params = load_params(work / "params.yaml")
    assert params["pretrain"]["imag_clip"] is True and params["pretrain"]["steps"] == 123
    assert params["seed"] == 4 and params["collect_target"]["transitions"] == 300
    assert params["collect_target"]["behaviour"]["noise_fraction"] == 0.5
    # the records of a run with overrides are told apart by them (its variant)
    from redraw.results_records import workdir_variant

    assert workdir_variant(work) == "pretrain.imag_clip=true, pretrain.steps=123"
    with pytest.raises(ConfigError, match="--set: key 'pretrain.no_such_key' does not exist"):
        transfer_quality.prepare(work, "smoke", 4, None, "expert", overrides={"pretrain.no_such_key": 1})
    assert workdir_variant(work) == ""  # refused: the work dir is left without overrides, and says so
    transfer_quality.prepare(work, "smoke", 4, None, "expert", overrides={"train_policy.imag_unimix": 0.01})
    assert workdir_variant(work) == "train_policy.imag_unimix=0.01"
    transfer_quality.prepare(work, "smoke", 4, None, "expert")
    assert workdir_variant(work) == ""
    proc = subprocess.run([sys.executable, "-m", "redraw.experiments.transfer_quality", "--preset", "smoke",
                           "--workdir", str(tmp_path), "--set", "seed"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--set 'seed': expected KEY=VALUE" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "redraw.experiments.transfer_quality", "--preset", "smoke",
                           "--workdir", str(tmp_path), "--clone-steps", "-1"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--clone-steps must be 0" in proc.stderr


def test_the_primary_target_data_are_the_papers_expert_episodes_and_half_noise_is_a_named_variant(tmp_path):
    """The cpu preset and the benchmark's default collect the oracle's episodes only (its sampled
    actions, no noise), as the paper does; the half-noise data run only when asked, named as such."""
    import shutil

    from redraw.config import apply_preset

    shutil.copytree(ROOT / "presets", tmp_path / "presets")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    apply_preset("cpu", tmp_path / "params.yaml", root=tmp_path)
    cpu = load_params(tmp_path / "params.yaml")["collect_target"]["behaviour"]
    assert (cpu["kind"], cpu["checkpoint"], cpu["noise_fraction"]) == ("policy", "models/oracle/agent.pt", 0.0)
    args = transfer_quality.build_parser().parse_args([])
    assert (args.preset, args.target_behaviour, args.noise_fraction) == ("cpu", "expert", 0.0)
    work = tmp_path / "cpu-seed0"
    transfer_quality.prepare(work, args.preset, 0, None, "expert", transfer_quality.METHODS, args.noise_fraction)
    assert load_params(work / "params.yaml")["collect_target"]["behaviour"]["noise_fraction"] == 0.0
    assert "the paper's data" in transfer_quality.describe_target("expert", 0.0)
    variant = transfer_quality.build_parser().parse_args(["--noise-fraction", "0.5"])
    assert "half-noise variant, not the paper's data" in transfer_quality.describe_target("expert",
                                                                                         variant.noise_fraction)


def test_the_benchmark_brings_the_methods_evaluations_up_to_date_and_the_rssm_only_for_dreamer_finetune():
    """Each stage of those targets, with what it needs, runs as soon as its inputs exist."""
    assert transfer_quality.stage_targets(("no_adapt", "redraw", "oracle"), trainings_only=True) == ["pretrain", "oracle"]
    assert transfer_quality.stage_targets(("dreamer_finetune", "oracle")) == [
        "pretrain", "oracle", "pretrain_rssm", "evaluate@source", "evaluate@dreamer_finetune", "evaluate@oracle"]


@pytest.mark.slow  # it needs the smoke pipeline's outputs (smoke_repo)
def test_status_says_where_each_work_dir_stands_and_writes_nothing(smoke_repo, tmp_path, capsys):
    """``--status``: a finished work dir's trainings and evaluations, and a stopped one's training
    at its checkpoint's step with the time it has left at its own pace."""
    from redraw.checkpoint import load_checkpoint, save_checkpoint

    root = tmp_path / "work"
    finished = root / "pendulum-swingup-reversed" / "smoke-seed0"
    finished.parent.mkdir(parents=True)
    finished.symlink_to(smoke_repo.path)
    stopped = root / "pendulum-swingup-reversed" / "smoke-seed7"
    (stopped / "reports").mkdir(parents=True)
    params = (smoke_repo.path / "params.yaml").read_text().replace("\nseed: 0\n", "\nseed: 7\n")
    assert "\nseed: 7\n" in params
    (stopped / "params.yaml").write_text(params)
    ckpt = next((smoke_repo.path / "checkpoints").glob("pretrain-*/checkpoint.pt"))
    state = load_checkpoint(ckpt)  # the smoke training's last checkpoint, as if stopped halfway there
    identity = state.pop("identity")
    steps, seconds = int(state["steps"]), 1800.0  # the target length, which the identity leaves out
    step = steps // 2
    save_checkpoint(stopped / "checkpoints" / ckpt.parent.name / "checkpoint.pt",
                    {**state, "step": step, "seconds": seconds}, identity)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))

    assert transfer_quality.status(root, "smoke") == 0
    out = capsys.readouterr().out.splitlines()
    done = out[out.index(next(line for line in out if line.startswith("pendulum-swingup-reversed seed 0"))) + 1:][:4]
    assert all(" finished, " in line for line in done[:3]) and done[3].startswith("  evaluated: ")
    assert "redraw" in done[3] and "oracle" in done[3]
    i = out.index(next(line for line in out if line.startswith("pendulum-swingup-reversed seed 7")))
    pretrain, oracle, rssm, evaluated = out[i + 1:i + 5]
    assert pretrain.split()[:4] == ["pretrain", f"{step:,}", "/", f"{steps:,}"]
    assert f"30 min trained, ~{transfer_quality._hours(seconds / step * (steps - step))} left at its pace so far" \
        in pretrain and pretrain.endswith(" ago")
    assert oracle.split() == ["oracle", "not", "started"] and rssm.split() == ["pretrain_rssm", "not", "started"]
    assert evaluated == "  evaluated: nothing yet"
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written
    assert transfer_quality.status(root, "cpu") == 0 and "no work dirs of the cpu preset" in capsys.readouterr().out


def test_status_says_where_each_policy_stage_stands(tmp_path, capsys):
    """``--status`` on a work dir whose policy stages are half done (a checkpoint) and finished
    (the stage's report): updates of the total, training time and the time left at its pace."""
    import json

    from redraw.checkpoint import save_checkpoint

    workdir = tmp_path / "work" / "reacher-easy-reversed" / "cpu-seed1"
    (workdir / "reports/train_policy").mkdir(parents=True)
    (workdir / "params.yaml").write_text("preset: cpu\nseed: 1\nenv:\n  target: reacher-easy-reversed\n")
    save_checkpoint(workdir / "checkpoints/policy-redraw-0123456789ab/checkpoint.pt",
                    {"update": 2_500, "seconds": 900.0}, {"method": "redraw", "train_policy": {"updates": 10_000}})
    (workdir / "reports/train_policy/draw_finetune.json").write_text(
        json.dumps({"policy/updates": 10_000, "policy/seconds": 2_700.0}))

    assert transfer_quality.status(tmp_path / "work") == 0
    out = capsys.readouterr().out.splitlines()
    assert "  policy draw_finetune: finished, 10,000 updates in 45 min" in out
    redraw = next(line for line in out if line.startswith("  policy redraw:"))
    assert redraw.startswith("  policy redraw: 2,500 / 10,000 updates, 15 min trained, ~45 min left at its pace")
    assert redraw.endswith(" ago")


def test_a_copied_work_dir_is_not_the_benchmarks(tmp_path):
    """A work dir copied to try a variant (``cpu-seed1-unimix``, its params still seed 1) is not
    one of the benchmark's: ``--harvest`` would otherwise record it as seed 1's results."""
    root = tmp_path / "work"
    for name in ("cpu-seed1", "cpu-seed1-unimix", "cpu-seed2"):
        (root / "reacher-easy-reversed" / name).mkdir(parents=True)
        (root / "reacher-easy-reversed" / name / "params.yaml").write_text("preset: cpu\nseed: 1\n")
    assert transfer_quality.work_dirs(root) == [root / "reacher-easy-reversed" / "cpu-seed1"]
    assert transfer_quality.work_dirs(root, "cpu") == [root / "reacher-easy-reversed" / "cpu-seed1"]
    assert transfer_quality.work_dirs(root, "smoke") == []


def test_a_kept_work_dir_resumes_on_its_own_code_unless_asked_to_take_the_checkouts(tmp_path, monkeypatch, capsys):
    """A training stopped midway must not resume on code of a later commit (a mix of two codes):
    the work dir's files are restored from the commit it started at; ``--update-code`` takes the
    checkout's; code that was never committed cannot be restored and is refused, naming the dir."""
    import shutil

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for item in transfer_quality.CODE_ITEMS:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, checkout / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, checkout / item)

    def git(*cmd):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *cmd], cwd=checkout, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "first")
    first = git("rev-parse", "--short", "HEAD")
    monkeypatch.setattr(transfer_quality, "ROOT", checkout)
    work = tmp_path / "work" / "smoke-seed4"
    transfer_quality.prepare(work, "smoke", 4, None, "expert")
    assert transfer_quality.workdir_commit(work) == first
    marker = checkout / "src/redraw/stages/pretrain.py"
    marker.write_text(marker.read_text() + "\n# changed\n")
    git("commit", "-q", "-am", "second")
    second = git("rev-parse", "--short", "HEAD")

    transfer_quality.prepare(work, "smoke", 4, None, "expert")  # resumed: its own code, its params redone
    assert "# changed" not in (work / "src/redraw/stages/pretrain.py").read_text()
    assert transfer_quality.workdir_commit(work) == first and load_params(work / "params.yaml")["seed"] == 4
    assert f"resuming on its own code of {first}" in capsys.readouterr().out

    transfer_quality.prepare(work, "smoke", 4, None, "expert", update_code=True)
    assert "# changed" in (work / "src/redraw/stages/pretrain.py").read_text()
    assert transfer_quality.workdir_commit(work) == second

    (work / "COMMIT").write_text(f"{first}+dirty\n")
    with pytest.raises(transfer_quality.WorkdirError, match=f"{work}: its code is of {first}\\+dirty"):
        transfer_quality.prepare(work, "smoke", 4, None, "expert")
    assert "# changed" in (work / "src/redraw/stages/pretrain.py").read_text()  # refused: nothing touched

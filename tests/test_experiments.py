"""The experiments (redraw.experiments): ``redraw experiment`` lists and runs every module of the
package, each answers its own ``--help``, the Prefect sweep runs the same module, and benchmarks/
holds the speed measurements only."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from redraw.cli import main
from redraw.experiments import EXPERIMENTS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src/redraw/experiments"
HELPERS = {"provenance"}  #: modules of the package that are not experiments


def test_every_module_of_the_package_is_an_experiment_of_the_registry_and_its_docstring():
    modules = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_")} - HELPERS
    assert set(EXPERIMENTS) == modules and len(modules) >= 9
    package_doc = importlib.import_module("redraw.experiments").__doc__
    for name, e in EXPERIMENTS.items():
        assert e.module == f"redraw.experiments.{name}" and f"``{name}``" in package_doc, name
        # the listing's one line: the module docstring's first paragraph is one line
        assert e.description and e.description == importlib.import_module(e.module).__doc__.split("\n")[0], name


def test_redraw_experiment_help_lists_every_experiment_without_importing_them():
    code = ("import sys\nfrom redraw.cli import main\ntry:\n    main(['experiment', '--help'])\n"
            "except SystemExit as exc:\n    print('exit', exc.code)\n"
            "print('imported:', sorted(m for m in sys.modules if m in ('torch', 'numpy') or m.startswith("
            "'redraw.experiments.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "exit 0" in out and "imported: []" in out  # the listing reads the files; torch stays unimported
    for name, e in EXPERIMENTS.items():
        assert f" {name} {e.description}" in out, name


def test_an_experiment_answers_its_own_help_through_the_cli(capsys):
    argv = list(sys.argv)
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "bc_reference", "--help"])
    assert exc.value.code == 0 and sys.argv == argv
    out = capsys.readouterr().out
    assert out.startswith("usage: redraw experiment bc_reference") and "--workdir" in out and "--top-fraction" in out


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_main_takes_its_arguments_and_answers_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        importlib.import_module(EXPERIMENTS[name].module).main(["--help"])
    assert exc.value.code == 0 and "usage:" in capsys.readouterr().out


def test_an_unknown_experiment_is_refused_naming_the_known_ones(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "no_such_experiment", "--workdir", "x"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "invalid choice: 'no_such_experiment'" in err
    assert all(f"'{name}'" in err for name in EXPERIMENTS)


def test_the_sweep_clones_with_the_experiment_module(tmp_path, monkeypatch):
    """A sweep point's cloned reference is ``python -m redraw.experiments.bc_reference``: the code
    ``redraw experiment bc_reference`` runs (with the point's env, the point's own checkout's)."""
    sweep = pytest.importorskip("flows.sweep")
    for rel in sweep.CLONE_NEEDS:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    ran = []

    def fake_sh(cmd, cwd, env=None, check=True):
        ran.append(cmd)
        Path(cmd[cmd.index("--results") + 1]).write_text(json.dumps({"records": [{"method": "redraw"}]}))

    monkeypatch.setattr(sweep, "_sh", fake_sh)
    (tmp_path / "reports").mkdir()
    assert sweep.clone_reference(tmp_path, 40) == [{"method": "redraw"}]
    assert ran[0][:3] == [sys.executable, "-m", EXPERIMENTS["bc_reference"].module]
    assert ran[0][3:7] == ["--workdir", str(tmp_path), "--steps", "40"]


def test_benchmarks_holds_the_speed_measurements_only():
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    assert {"train_speed", "profile_update", "ab_update", "matmul_sizes", "optimizer_step", "wm_update_speed",
            "collect_throughput"} <= scripts
    assert not scripts & set(EXPERIMENTS), "an experiment driver in benchmarks/ (it belongs in redraw.experiments)"
    assert "checkout" not in scripts and not scripts & HELPERS

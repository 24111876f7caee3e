"""The import structure: the layers pyproject.toml's [tool.importlinter] declares, kept by every
module (function-local imports included), and no import cycle anywhere, the benchmark scripts' too."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("importlinter")


def test_the_packages_keep_their_layers_and_import_nothing_in_a_cycle():
    """``lint-imports``: a lower layer (config, models, agent, envs, data, ...) that imports a higher
    one (stages, cli, flows), or modules that import each other, break a contract and name the import."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}  # this checkout's code
    out = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                          "sys.exit(lint_imports_command())", "--no-cache", "--no-logo"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout, out.stdout


def test_the_benchmark_scripts_import_each_other_without_a_cycle(monkeypatch):
    """The scripts in benchmarks/ import each other by bare name (``from train_speed import ...``,
    with benchmarks/ on sys.path), which import-linter takes for outside packages: the graph of
    benchmarks/ as a namespace package, with those imports drawn between its modules, has no cycle."""
    import grimp

    monkeypatch.syspath_prepend(str(ROOT))
    graph = grimp.build_graph("benchmarks", include_external_packages=True, cache_dir=None)
    scripts = {m.removeprefix("benchmarks.") for m in graph.find_children("benchmarks")}
    assert {"train_speed", "ab_update"} <= scripts, scripts
    for script in scripts:
        for imported in graph.find_modules_directly_imported_by(f"benchmarks.{script}"):
            if imported in scripts:
                graph.add_import(importer=f"benchmarks.{script}", imported=f"benchmarks.{imported}")
    assert graph.find_upstream_modules("benchmarks.ab_update") >= {"benchmarks.train_speed"}  # bare imports drawn
    breakers = graph.nominate_cycle_breakers("benchmarks")
    assert not breakers, f"benchmarks/ scripts import each other in a cycle; it would end without {sorted(breakers)}"

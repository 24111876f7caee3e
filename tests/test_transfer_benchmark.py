"""The quality benchmark's own settings: ``--set`` overrides reach the work directory's params."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import transfer_quality  # noqa: E402

from redraw.config import ConfigError, load_params  # noqa: E402


def test_set_parses_dotted_keys_with_yaml_values():
    assert transfer_quality.parse_set(["pretrain.imag_clip=true", "seed=3", "env.obs_mode=proprio"]) == {
        "pretrain.imag_clip": True, "seed": 3, "env.obs_mode": "proprio"}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        transfer_quality.parse_set(["pretrain.imag_clip"])


def test_overrides_win_over_the_preset_and_unknown_keys_are_refused(tmp_path):
    work = tmp_path / "smoke-seed4"
    transfer_quality.prepare(work, "smoke", 4, 300, True, transfer_quality.METHODS, 0.5,
                             {"pretrain.imag_clip": True, "pretrain.steps": 123})
    params = load_params(work / "params.yaml")
    assert params["pretrain"]["imag_clip"] is True and params["pretrain"]["steps"] == 123
    assert params["seed"] == 4 and params["collect_target"]["transitions"] == 300
    assert params["collect_target"]["behaviour"]["noise_fraction"] == 0.5
    with pytest.raises(ConfigError, match="--set: key 'pretrain.no_such_key' does not exist"):
        transfer_quality.prepare(work, "smoke", 4, None, True, overrides={"pretrain.no_such_key": 1})
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/transfer_quality.py"), "--preset", "smoke",
                           "--workdir", str(tmp_path), "--set", "seed"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--set 'seed': expected KEY=VALUE" in proc.stderr

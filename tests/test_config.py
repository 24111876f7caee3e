"""params.yaml and presets: switching preset is one exact command and is recorded."""

import shutil
from pathlib import Path

import pytest

from redraw.config import ConfigError, apply_preset, flatten, load_params, preset_names
from redraw.config import _yaml

ROOT = Path(__file__).resolve().parents[1]


def test_every_preset_sets_the_same_keys_and_they_exist_in_params():
    names = preset_names(ROOT)
    assert {"smoke", "quick", "cpu", "paper"} <= set(names)
    keysets = {n: set(flatten(_yaml().load((ROOT / "presets" / f"{n}.yaml").read_text()))) for n in names}
    # a preset may pin the env pair its shipped models or its tests are made for; nothing else differs
    pair = {"env.source", "env.target"}
    first = keysets[names[0]] - pair
    for name, keys in keysets.items():
        assert keys - pair == first, f"preset {name} sets different keys: {(keys - pair) ^ first}"
        assert not keys & pair or keys >= pair, f"preset {name} pins half of the pair: {keys & pair}"
    params = flatten(load_params(ROOT / "params.yaml"))
    assert first | pair <= set(params)


def test_default_params_are_the_quick_preset():
    params = flatten(load_params(ROOT / "params.yaml"))
    quick = flatten(_yaml().load((ROOT / "presets" / "quick.yaml").read_text()))
    assert params["preset"] == "quick"
    assert {k: params[k] for k in quick} == quick


def test_switching_presets_is_exact_and_keeps_comments(tmp_path):
    shutil.copytree(ROOT / "presets", tmp_path / "presets")
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    original = params.read_text()
    changed = apply_preset("smoke", params, root=tmp_path)
    assert "preset" in changed and "env.episode_steps" in changed
    smoke = load_params(params)
    assert smoke["preset"] == "smoke" and smoke["env"]["episode_steps"] == 50
    assert "# redraw hyperparameters" in params.read_text()
    apply_preset("quick", params, root=tmp_path)
    assert params.read_text() == original


def test_unknown_preset_and_unknown_key_are_refused(tmp_path):
    shutil.copytree(ROOT / "presets", tmp_path / "presets")
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*smoke"):
        apply_preset("huge", params, root=tmp_path)
    (tmp_path / "presets" / "bad.yaml").write_text("env:\n  obs_modes: pixels\n")
    with pytest.raises(ConfigError, match="bad.yaml: key 'env.obs_modes' does not exist"):
        apply_preset("bad", params, root=tmp_path)
    assert load_params(params)["preset"] == "quick"


@pytest.mark.parametrize("change, message", [
    ({"env": {"target": "my-robot"}, "train_policy": {"eval_every": 10}},
     r"train_policy.eval_every needs env.target to be a simulator; 'my-robot'"),
    ({"train_policy": {"eval_every": 10, "eval_episodes": 0}}, r"train_policy.eval_episodes must be at least 1"),
    ({"train_policy": {"lr": -1.0}}, r"train_policy.lr must be positive"),
    ({"train_policy": {"checkpoint_every": 0}}, r"train_policy.checkpoint_every must be at least 1, got 0"),
])
def test_train_policy_refuses_bad_settings_before_reading_anything(tmp_path, monkeypatch, change, message):
    from redraw.stages import train_policy

    params = load_params(ROOT / "params.yaml")
    for section_name, values in change.items():
        params[section_name].update(values)
    import shutil

    shutil.copy(ROOT / "envs.yaml", tmp_path)  # the env-pair file params.yaml names
    monkeypatch.chdir(tmp_path)  # no models, no data here: the settings are refused first
    with pytest.raises(ConfigError, match=message):
        train_policy.run("redraw", params)


def test_a_duplicate_key_in_params_is_one_line_naming_the_file_and_the_key(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("seed: 0\nenv:\n  source: a\n  source: b\n")
    for round_trip in (False, True):
        with pytest.raises(ConfigError) as err:
            load_params(params, round_trip=round_trip)
        assert str(err.value) == f"{params}: line 4: duplicate key 'source' (a key may appear once in a mapping)"
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "twice.yaml").write_text("seed: 1\nseed: 2\n")
    with pytest.raises(ConfigError) as err:
        apply_preset("twice", params, root=tmp_path)
    assert str(err.value) == (f"{tmp_path / 'presets' / 'twice.yaml'}: line 2: duplicate key 'seed' "
                              "(a key may appear once in a mapping)")

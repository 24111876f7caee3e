"""Target data gating: only validated, unchanged, compatible data reaches calibration."""

import json

import numpy as np
import pytest

from redraw.data.episodes import dataset_fingerprint, list_episodes
from redraw.data.target import TargetDataError, load_target
from synthetic import make_dataset

MODEL = {"env": "pendulum-swingup", "obs_mode": "proprio", "obs_spec": {"state": [3]}, "action_size": 1}
TARGET = "pendulum-swingup-reversed"


def validated(tmp_path, monkeypatch, success=True, **kw):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path / "data", **kw)
    result = {"data_dir": "data", "success": success, "data_fingerprint": dataset_fingerprint("data"),
              "failures": [] if success else [{"check": "finite_values", "file": "data/episode-000001.npz",
                                               "field": "reward", "message": "1 non-finite value"}]}
    (tmp_path / "reports/validation").mkdir(parents=True)
    (tmp_path / "reports/validation/result.json").write_text(json.dumps(result))


def test_accepted_data_is_split_into_training_and_held_out_episodes(tmp_path, monkeypatch):
    validated(tmp_path, monkeypatch, episodes=5, steps=40)
    meta, train, held, fp = load_target("data", MODEL, "models/pretrain/agent.pt", TARGET, holdout=2)
    assert len(train) == 3 and len(held) == 2 and fp == dataset_fingerprint("data")
    # a transition budget keeps the newest episodes only
    _, train, held, _ = load_target("data", MODEL, "m.pt", TARGET, transitions=70, holdout=1)
    assert len(train) == 2 and len(held) == 1
    files = [np.load(p, allow_pickle=False)["reward"] for p in list_episodes("data")]
    np.testing.assert_array_equal(held[0]["reward"], files[-1])  # the newest is held out
    np.testing.assert_array_equal(train[-1]["reward"], files[-2])  # the budget takes the next newest


def test_rejected_data_is_refused_with_the_failures(tmp_path, monkeypatch):
    validated(tmp_path, monkeypatch, success=False)
    with pytest.raises(TargetDataError, match=r"rejected by validation.*episode-000001.npz: reward"):
        load_target("data", MODEL, "m.pt", TARGET)


def test_data_changed_after_validation_or_never_validated_is_refused(tmp_path, monkeypatch):
    validated(tmp_path, monkeypatch)
    path = list_episodes("data")[0]
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(TargetDataError, match="changed since it was validated"):
        load_target("data", MODEL, "m.pt", TARGET)
    (tmp_path / "reports/validation/result.json").unlink()
    with pytest.raises(TargetDataError, match="not validated"):
        load_target("data", MODEL, "m.pt", TARGET)


@pytest.mark.parametrize("field, change, message", [
    ("obs_mode", "pixels", "obs_mode is 'proprio' but the pretrained model m.pt has obs_mode 'pixels'"),
    ("action_size", 2, "action_size is 1 but the pretrained model m.pt has action_size 2"),
    ("obs_spec", {"state": [5]}, "observation 'state' shape is \\[3\\] but the pretrained model m.pt"),
])
def test_data_the_model_cannot_use_is_refused_naming_both_sides(tmp_path, monkeypatch, field, change, message):
    validated(tmp_path, monkeypatch)
    with pytest.raises(TargetDataError, match=message):
        load_target("data", {**MODEL, field: change}, "m.pt", TARGET)
    with pytest.raises(TargetDataError, match="env is 'pendulum-swingup-reversed' but params env.target is 'cup"):
        load_target("data", MODEL, "m.pt", "cup-catch-windy")

"""The target data as the adaptation stages use it: validated, compatible, split.

``calibrate`` and ``train_policy`` train only on data that the ``validate_target`` stage
accepted *as it is now* (the validation result records the data's fingerprint), that matches
the pretrained model (env, observation mode and shapes, action size), and only on its newest
``target_transitions`` (the paper uses the newest ~40k steps). The newest episodes beyond
that budget are never mixed in; a fixed number of episodes is held out for reporting.
"""

from __future__ import annotations

import json
from pathlib import Path

from redraw.data.episodes import Episode, dataset_fingerprint, episode_steps, list_episodes, load_episode
from redraw.data.schema import DataError, DatasetMeta, read_metadata

VALIDATION_RESULT = "reports/validation/result.json"


class TargetDataError(ValueError):
    """Target data that must not be trained on (rejected, stale, or not the model's kind)."""


def require_validated(data_dir: str, result_path: str = VALIDATION_RESULT) -> dict:
    """The validation result for ``data_dir``; refuses data that validation rejected, never
    validated, or that changed since it was validated."""
    path = Path(result_path)
    if not path.is_file():
        raise TargetDataError(f"{data_dir}: not validated ({result_path} missing); run `dvc repro validate_target` "
                              "or `redraw validate --data " + data_dir + "` first")
    result = json.loads(path.read_text())
    if Path(result.get("data_dir", "")).resolve() != Path(data_dir).resolve():
        raise TargetDataError(f"{result_path} validated {result.get('data_dir')!r}, not {data_dir!r}; "
                              "validate this data set first")
    if not result.get("success"):
        shown = "; ".join(f"{f.get('file', '?')}: {f.get('field', '?')}: {f.get('message', '')}"
                          for f in result.get("failures", [])[:5])
        raise TargetDataError(f"{data_dir}: rejected by validation ({len(result.get('failures', []))} failure(s): "
                              f"{shown}); refusing to train on it. Fix the data and re-run validate_target")
    if result.get("data_fingerprint") != dataset_fingerprint(data_dir):
        raise TargetDataError(f"{data_dir}: changed since it was validated ({result_path}); re-run validate_target")
    return result


def check_compatible(meta: DatasetMeta, data_dir: str, identity: dict, model_path: str, target_env: str) -> None:
    """Refuse target data that is not what the pretrained model (``identity``) acts on."""
    def refuse(field: str, data_value, model_value) -> None:
        raise TargetDataError(f"{data_dir}: {field} is {data_value!r} but the pretrained model {model_path} "
                              f"has {field} {model_value!r}")

    if meta.env != target_env:
        raise TargetDataError(f"{data_dir}: env is {meta.env!r} but params env.target is {target_env!r}")
    if meta.obs_mode != identity["obs_mode"]:
        refuse("obs_mode", meta.obs_mode, identity["obs_mode"])
    if meta.action_size != identity["action_size"]:
        refuse("action_size", meta.action_size, identity["action_size"])
    data_spec = {k: list(v["shape"]) for k, v in meta.observations.items()}
    model_spec = {k: list(v) for k, v in identity["obs_spec"].items()}
    for key in sorted(set(data_spec) | set(model_spec)):
        if data_spec.get(key) != model_spec.get(key):
            refuse(f"observation {key!r} shape", data_spec.get(key), model_spec.get(key))


def load_target(data_dir: str, identity: dict, model_path: str, target_env: str, transitions: int = 0,
                holdout: int = 0) -> tuple[DatasetMeta, list[Episode], list[Episode], str]:
    """Validated, compatible target episodes: (meta, train, held out, fingerprint).

    The last ``holdout`` episodes (by file order) are held out: reported on, never trained on,
    the same whatever the budget. ``transitions`` > 0 trains on the newest of the others, up
    to that many transitions (whole episodes; the last one may cross the budget).
    """
    result = require_validated(data_dir)
    try:
        meta = read_metadata(data_dir)
    except DataError as exc:
        raise TargetDataError(str(exc)) from None
    check_compatible(meta, data_dir, identity, model_path, target_env)
    paths = list_episodes(data_dir)
    if len(paths) <= holdout:
        raise TargetDataError(f"{data_dir}: {len(paths)} episode(s), need more than the {holdout} held out "
                              "(calibrate.holdout_episodes)")
    episodes = [load_episode(p) for p in paths]
    train, held = (episodes[:-holdout], episodes[-holdout:]) if holdout else (episodes, [])
    if transitions > 0:
        kept, total = [], 0
        for ep in reversed(train):
            if total >= transitions:
                break
            kept.append(ep)
            total += episode_steps(ep)
        train = kept[::-1]
    return meta, train, held, result["data_fingerprint"]

"""The target-data contract as Great Expectations suites (docs/episode-schema.md).

``validate_dataset(directory, config)`` works in two phases:

1. ``summary.summarize`` reads ``metadata.json`` and streams the episodes one at a time into
   four small pandas tables (``dataset``, ``observations``, ``episodes``, ``fields``: one row per
   episode file x key). Unreadable metadata or episode files become failures right there.
2. One Great Expectations 1.x suite per table, built here from ``ValidationConfig``, runs on
   those tables in an ephemeral (in-memory) context with ``result_format="COMPLETE"``; every
   unexpected row names its file and field, which become :class:`Failure` s.

With ``docs_dir`` the validation results are also rendered as GX HTML data docs
(``docs_dir/index.html``). The data directory is only ever read.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from redraw.validation.summary import Summary, summarize


@dataclass
class ValidationConfig:
    """Thresholds of the contract; ``params.yaml`` section ``validate`` sets them."""

    min_episode_length: int = 64  #: agent steps per episode, at least the training sequence length
    reward_min: float | None = 0.0  #: lowest reward allowed (row 0's placeholder excluded; None, -inf: no bound)
    reward_max: float | None = 1.0  #: highest reward allowed (None, inf: no bound)
    min_transitions: int = 1000  #: total agent steps across all episodes
    min_image_std: float = 2.0  #: an image whose pixel std is below this counts as blank
    max_blank_fraction: float = 0.05  #: per episode, fraction of blank frames allowed
    expected_env: str | None = None  #: metadata.env must equal this when set
    expected_obs_mode: str | None = None  #: metadata.obs_mode must equal this when set
    #: metadata.control_hz must equal this (to 0.1%) when set: the env's agent-step rate (``stages.validate``)
    expected_control_hz: float | None = None
    allow_rate_mismatch: bool = False  #: params' validate.allow_rate_mismatch: no control_hz check
    reward_from: str = ""  #: where the reward bounds come from, for the messages (``stages.validate``)


@dataclass
class Failure:
    check: str  #: short check name, e.g. ``finite_values``
    file: str  #: the offending file (episode .npz, metadata.json) or the directory
    field: str | None  #: the offending key or metadata field
    message: str  #: what was expected, what was found

    def __str__(self) -> str:
        where = self.file + (f" [{self.field}]" if self.field else "")
        return f"{where}: {self.check}: {self.message}"


@dataclass
class ValidationResult:
    directory: str
    success: bool
    failures: list[Failure]
    #: episodes, transitions, return_mean/std/min/max, unreadable, checks_evaluated, checks_failed,
    #: expectations_evaluated
    stats: dict
    #: check name -> True (passed) / False (failed), every check that was evaluated
    checks: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "directory": self.directory,
            "success": self.success,
            "stats": dict(self.stats),
            "checks": dict(self.checks),
            "failures": [asdict(f) for f in self.failures],
        }


DOCS_SITE = "redraw"

# -- the suites ---------------------------------------------------------------------------------
Message = Callable[[pd.Series], str]


@dataclass
class _Check:
    name: str  #: the Failure's check name
    expectation: Any  #: a gx.expectations.Expectation
    message: Message  #: unexpected summary row -> human sentence
    file_col: str = "file"
    field: str | None = "<row>"  #: "<row>": the row's ``field`` column; else this constant


def _num(x: Any) -> str:
    return f"{float(x):.6g}"


def _pair(expect, a: str, b: str, **kwargs):
    return expect(column_A=a, column_B=b, ignore_row_if="either_value_is_missing", **kwargs)


def _reward_checks(E, cfg: ValidationConfig, condition: dict) -> list[_Check]:
    """Each episode's lowest and highest reward within [reward_min, reward_max] (none where both
    sides are unbounded); the message names the params keys and where the bounds come from."""
    lo, hi = (None if v is None or not np.isfinite(v) else float(v) for v in (cfg.reward_min, cfg.reward_max))
    if lo is None and hi is None:
        return []
    where = "validate.reward_min, validate.reward_max" + (f": {cfg.reward_from}" if cfg.reward_from else "")
    span = f"[{cfg.reward_min}, {cfg.reward_max}]"
    return [_Check("reward_range", E.ExpectColumnValuesToBeBetween(column=col, min_value=lo, max_value=hi, **condition),
                   lambda r, col=col: f"reward {_num(r[col])} is outside {span} ({where})")
            for col in ("min", "max")]


def _suites(cfg: ValidationConfig, summary: Summary) -> dict[str, list[_Check]]:
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations
    meta = summary.meta
    spec_keys = sorted(meta.step_spec())
    reward = dict(row_condition=Column("field") == "reward")
    fields = [
        _Check("required_keys", E.ExpectColumnValuesToBeInSet(column="present", value_set=[True]),
               lambda r: f"required key is missing (the schema needs it: {r['expected_dtype']}, rows of shape "
                         f"{r['expected_row_shape']})"),
        _Check("unexpected_keys", E.ExpectColumnValuesToBeInSet(column="expected", value_set=[True]),
               lambda r: f"key is not in the episode schema for obs_mode {meta.obs_mode!r} (expected {spec_keys})"),
        _Check("dtype", _pair(E.ExpectColumnPairValuesToBeEqual, "dtype", "expected_dtype"),
               lambda r: f"dtype is {r['dtype']}, expected {r['expected_dtype']}"),
        _Check("shape", _pair(E.ExpectColumnPairValuesToBeEqual, "row_shape", "expected_row_shape"),
               lambda r: f"per-row shape is {r['row_shape']}, expected {r['expected_row_shape']} (metadata.json)"),
        _Check("consistent_lengths", _pair(E.ExpectColumnPairValuesToBeEqual, "length", "expected_length"),
               lambda r: f"has {int(r['length'])} rows but reward has {int(r['expected_length'])}; every key needs "
                         "one row per step"),
        _Check("finite_values", E.ExpectColumnValuesToBeBetween(column="n_nonfinite", min_value=0, max_value=0),
               lambda r: f"{int(r['n_nonfinite'])} non-finite values (NaN or inf); expected all finite"),
        _Check("action_bounds", _pair(E.ExpectColumnPairValuesAToBeGreaterThanB, "min", "low", or_equal=True),
               lambda r: f"action {_num(r['min'])} is below the lower bound {_num(r['low'])} (metadata action_low)"),
        _Check("action_bounds", _pair(E.ExpectColumnPairValuesAToBeGreaterThanB, "high", "max", or_equal=True),
               lambda r: f"action {_num(r['max'])} is above the upper bound {_num(r['high'])} (metadata action_high)"),
        *_reward_checks(E, cfg, reward),
        _Check("first_flags", E.ExpectColumnValuesToBeInSet(column="first_flags_ok", value_set=[True]),
               lambda r: f"expected True at row 0 only, found True at rows {r['true_rows']}"),
        _Check("last_flags", E.ExpectColumnValuesToBeInSet(column="last_flags_ok", value_set=[True]),
               lambda r: f"expected True at the final row ({int(r['length']) - 1}) only, found True at rows "
                         f"{r['true_rows']}"),
        _Check("terminal_flags", E.ExpectColumnValuesToBeInSet(column="terminal_flags_ok", value_set=[True]),
               lambda r: f"may be True at the final row only ({int(r['length']) - 1}), found True at rows "
                         f"{r['true_rows']}"),
        _Check("blank_images", E.ExpectColumnValuesToBeBetween(
                   column="blank_fraction", min_value=0.0, max_value=cfg.max_blank_fraction),
               lambda r: f"{int(r['blank_frames'])} of {int(r['length'])} frames are blank (pixel std < "
                         f"{cfg.min_image_std}): {r['blank_fraction']:.1%}, at most {cfg.max_blank_fraction:.1%} allowed"),
    ]
    episodes = [
        _Check("episode_length", E.ExpectColumnValuesToBeBetween(column="steps", min_value=cfg.min_episode_length),
               lambda r: f"{int(r['steps'])} agent steps, fewer than min_episode_length {cfg.min_episode_length}"),
        _Check("duplicate_episodes", E.ExpectColumnValuesToBeUnique(column="content_hash"),
               lambda r: "identical content to " + ", ".join(
                   Path(f).name for f in summary.episodes.file[summary.episodes.content_hash == r['content_hash']]
                   if f != r['file']),
               field=None),
    ]
    observations = [
        _Check("metadata_observations", _pair(E.ExpectColumnPairValuesToBeEqual, "dtype", "expected_dtype"),
               lambda r: f"metadata declares dtype {r['dtype']}, the episode schema requires {r['expected_dtype']}"),
        _Check("metadata_observations", E.ExpectColumnValuesToBeInSet(column="shape_ok", value_set=[True]),
               lambda r: f"metadata shape {r['shape']} is not valid (image: [H, W, 3]; velocity, state: [N])"),
    ]
    dataset = [
        _Check("no_episodes", E.ExpectColumnValuesToBeBetween(column="episodes", min_value=1),
               lambda r: "no readable episode files (*.npz) in the directory", file_col="directory", field=None),
        _Check("min_transitions", E.ExpectColumnValuesToBeBetween(column="transitions", min_value=cfg.min_transitions),
               lambda r: f"{int(r['transitions'])} transitions in {int(r['episodes'])} readable episodes, fewer than "
                         f"min_transitions {cfg.min_transitions}", file_col="directory", field=None),
    ]
    if cfg.expected_env is not None:
        dataset.append(_Check(
            "expected_env", E.ExpectColumnValuesToBeInSet(column="env", value_set=[cfg.expected_env]),
            lambda r: f"metadata env is {r['env']!r}, expected {cfg.expected_env!r}", file_col="metadata", field="env"))
    if cfg.expected_obs_mode is not None:
        dataset.append(_Check(
            "expected_obs_mode", E.ExpectColumnValuesToBeInSet(column="obs_mode", value_set=[cfg.expected_obs_mode]),
            lambda r: f"metadata obs_mode is {r['obs_mode']!r}, expected {cfg.expected_obs_mode!r}",
            file_col="metadata", field="obs_mode"))
    if cfg.expected_control_hz is not None:
        hz = float(cfg.expected_control_hz)
        dataset.append(_Check(
            "expected_control_hz",
            E.ExpectColumnValuesToBeBetween(column="control_hz", min_value=hz * 0.999, max_value=hz * 1.001),
            lambda r: f"metadata control_hz is {r['control_hz']:g} Hz, the env takes {hz:g} agent steps per second "
                      "(env.action_repeat); a model of one rate does not predict another's transitions",
            file_col="metadata", field="control_hz"))
    for checks in (fields, episodes, observations, dataset):
        for n, check in enumerate(checks):
            check.expectation.meta = {"check": check.name, "n": n}
            check.expectation.notes = f"redraw data contract check `{check.name}`"
    return {"dataset": dataset, "observations": observations, "episodes": episodes, "fields": fields}


# -- running ------------------------------------------------------------------------------------
def _context(docs_dir: Path | None):
    """An in-memory GX context: no GX files anywhere but the data docs site (when asked for)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        sites[DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run_suites(context, cfg: ValidationConfig, summary: Summary) -> tuple[list[Failure], dict[str, bool], int]:
    import great_expectations as gx

    failures: list[Failure] = []
    checks: dict[str, bool] = {}
    evaluated = 0
    source = context.data_sources.add_pandas("redraw_summary")
    for table, table_checks in _suites(cfg, summary).items():
        frame: pd.DataFrame = getattr(summary, table)
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(
            gx.ExpectationSuite(name=f"redraw.{table}", expectations=[c.expectation for c in table_checks])
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"redraw.{table}", data=batch, suite=suite)
        )
        result = definition.run(batch_parameters={"dataframe": frame}, result_format="COMPLETE")
        for check, outcome in zip(table_checks, _in_order(result, table_checks)):
            evaluated += 1
            checks[check.name] = checks.get(check.name, True) and bool(outcome.success)
            if outcome.success:
                continue
            info = outcome.exception_info or {}
            indices = (outcome.result or {}).get("unexpected_index_list") or []
            if info.get("raised_exception") or not indices:
                message = info.get("exception_message") or f"expectation {outcome.expectation_config.type} failed"
                failures.append(Failure(check.name, str(summary.directory), None, message))
                continue
            for index in indices:
                row = frame.loc[index]
                name = row["field"] if check.field == "<row>" else check.field
                failures.append(Failure(check.name, str(row[check.file_col]), name, check.message(row)))
    return failures, checks, evaluated


def _in_order(result, table_checks: list[_Check]) -> list:
    """The suite's results in the order of ``table_checks`` (matched by the ``n`` in their meta)."""
    by_n = {(r.expectation_config.meta or {}).get("n"): r for r in result.results}
    return [by_n[n] for n in range(len(table_checks))]


def _merge(failures: list[Failure]) -> list[Failure]:
    """One Failure per (check, file, field): two bounds broken at once read as one sentence."""
    merged: dict[tuple, Failure] = {}
    for f in failures:
        key = (f.check, f.file, f.field)
        if key in merged:
            if f.message not in merged[key].message:
                merged[key].message += f"; {f.message}"
        else:
            merged[key] = Failure(f.check, f.file, f.field, f.message)
    return list(merged.values())


def validate_dataset(directory, config: ValidationConfig, docs_dir: str | Path | None = None) -> ValidationResult:
    """Check the data set in ``directory`` against the contract; never writes to ``directory``.

    With ``docs_dir``, GX HTML data docs of the validation results go to ``docs_dir/index.html``.
    """
    directory = Path(directory)
    docs = Path(docs_dir).resolve() if docs_dir is not None else None
    if docs is not None and directory.is_dir() and docs.is_relative_to(directory.resolve()):
        raise ValueError(f"{docs_dir}: data docs may not be written inside the data directory {directory}")
    summary = summarize(directory, min_image_std=config.min_image_std)
    failures = [Failure(*problem) for problem in summary.problems]
    checks = {"metadata": True, "readable": True} if directory.is_dir() else {"directory": False}
    for f in failures:
        checks[f.check] = False
    evaluated = 0
    context = _context(docs) if (summary.meta is not None or docs is not None) else None
    if summary.meta is not None:
        ge_failures, ge_checks, evaluated = _run_suites(context, config, summary)
        failures += ge_failures
        checks.update(ge_checks)
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        context.build_data_docs(site_names=[DOCS_SITE])
    failures = _merge(failures)
    stats: dict[str, Any] = {
        "episodes": 0 if summary.episodes is None else len(summary.episodes),
        "unreadable": summary.unreadable,
        "transitions": 0 if summary.dataset is None else int(summary.dataset.transitions.iloc[0]),
    }
    if summary.returns:
        r = np.asarray(summary.returns)
        stats.update(return_mean=float(r.mean()), return_std=float(r.std()),
                     return_min=float(r.min()), return_max=float(r.max()))
    stats.update(
        checks_evaluated=len(checks),
        checks_failed=sum(not ok for ok in checks.values()),
        expectations_evaluated=evaluated,
    )
    return ValidationResult(str(directory), not failures, failures, stats, checks)

"""Timing: put asynchronous or fixed-rate streams onto the control steps.

Times are integer nanoseconds. A stream's samples must be strictly increasing in time
(backwards or duplicate stamps are an error, never silently reordered). The steps are a bag's
action messages, or every n-th row of a fixed-rate table (``grid``, ``table_grid``); at each
step every stream is sampled *as of* its time: the newest sample at or before it, if that
sample is at most ``max_age`` old; images are never interpolated (nor is anything else). Steps
where a stream is stale or missing cut the recording into spans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from redraw.data.schema import DataError

NS = 1_000_000_000


@dataclass
class Stream:
    """One stream of a recording unit, as a reader delivers it."""

    key: str  #: config key, e.g. ``observations.velocity`` or ``action``
    where: str  #: the stream in the source: topic, feature key or dataset path
    t: np.ndarray  #: int64 ns, strictly increasing
    take: Callable[[np.ndarray], np.ndarray]  #: sample indices -> rows (vectors float, images uint8 HxWx3)
    names: list[str] | None = None  #: the source's dimension names, when known
    size: int | None = None  #: vector dimension before selection (None for images)
    image: bool = False


@dataclass
class Unit:
    """One recording unit (a bag, an HDF5 file or demo, a LeRobot episode): its streams."""

    file: str  #: source file for messages
    label: str  #: e.g. ``episode 3`` or the bag name
    streams: dict[str, Stream]
    #: fixed-rate tables: rows per second (the grid then falls exactly on rows); None: asynchronous
    table_rate: float | None = None
    info: dict = field(default_factory=dict)


def check_increasing(t: np.ndarray, file: str, key: str, where: str) -> None:
    """Refuse timestamps that go backwards or repeat, naming the first offending sample."""
    if len(t) == 0:
        raise DataError(file, key, f"stream {where!r} has no samples")
    d = np.diff(t)
    bad = np.flatnonzero(d <= 0)
    if bad.size:
        i = int(bad[0])
        what = "repeats" if d[i] == 0 else "goes backwards"
        raise DataError(file, key, f"stream {where!r}: timestamp {what} at sample {i + 1} "
                        f"({t[i] / NS:.6f} s -> {t[i + 1] / NS:.6f} s); {int(bad.size)} such sample(s)")


def asof(t: np.ndarray, grid: np.ndarray, max_age_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each grid time: (index of the newest sample at or before it, its age in ns, valid)."""
    idx = np.searchsorted(t, grid, side="right") - 1
    have = idx >= 0
    age = np.where(have, grid - t[np.maximum(idx, 0)], np.iinfo(np.int64).max)
    return np.maximum(idx, 0), age, have & (age <= max_age_ns)


def grid(start: int, end: int, hz: float) -> np.ndarray:
    """Grid times from ``start`` to at most ``end`` at ``hz`` (exact integer ns, no drift)."""
    if end < start:
        return np.zeros(0, np.int64)
    n = int(np.floor((end - start) * hz / NS + 1e-9)) + 1
    return start + np.round(np.arange(n) * (NS / hz)).astype(np.int64)


def table_grid(first_row: int, last_row: int, rate: float, step: int) -> np.ndarray:
    """Grid on a fixed-rate table: every ``step``-th row time, computed as the rows' own times are."""
    rows = np.arange(first_row, last_row + 1, step, dtype=np.int64)
    return row_times(rows, rate)


def row_times(rows: np.ndarray, rate: float) -> np.ndarray:
    return np.round(np.asarray(rows, np.float64) * (NS / rate)).astype(np.int64)


def decimation(rate: float, hz: float, file: str) -> int:
    """Integer rows per agent step of a fixed-rate table; anything else is refused."""
    ratio = rate / hz
    step = int(round(ratio))
    if step < 1 or abs(ratio - step) > 1e-6:
        raise DataError(file, "target.control_hz", f"the source has {rate:g} rows per second, which is not an "
                        f"integer multiple of control_hz {hz:g}; pick control_hz = {rate:g} / n")
    return step


def split_times(t: np.ndarray, gap_ns: int) -> list[tuple[int, int]]:
    """[start, end] windows of ``t`` separated where consecutive samples are more than ``gap_ns`` apart."""
    cuts = np.flatnonzero(np.diff(t) > gap_ns)
    starts = [int(t[0])] + [int(t[c + 1]) for c in cuts]
    ends = [int(t[c]) for c in cuts] + [int(t[-1])]
    return list(zip(starts, ends))


def spans(first_ok: np.ndarray, step_ok: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges [a, b) of the grid usable as episodes.

    An episode may start where ``first_ok`` (its observations are fresh) and continues while the
    next point is ``first_ok`` and ``step_ok`` (its action, and reward, are fresh too).
    """
    out, n, a = [], len(first_ok), None
    for k in range(n):
        if a is None:
            if first_ok[k]:
                a = k
        elif not (first_ok[k] and step_ok[k]):
            out.append((a, k))
            a = k if first_ok[k] else None
    if a is not None:
        out.append((a, n))
    return out


def jitter_stats(t: np.ndarray) -> dict:
    """Rate, period jitter and the longest gap of a timestamp series (for reports and inspect)."""
    if len(t) < 2:
        return {"count": int(len(t)), "rate_hz": None, "jitter_ms": None, "max_gap_s": None}
    d = np.diff(t).astype(np.float64) / NS
    span = float((t[-1] - t[0]) / NS)
    return {
        "count": int(len(t)),
        "rate_hz": round((len(t) - 1) / span, 3) if span > 0 else None,
        "jitter_ms": round(float(np.std(d)) * 1e3, 3),
        "max_gap_s": round(float(d.max()), 6),
        "duration_s": round(float((t[-1] - t[0]) / NS), 6),
    }

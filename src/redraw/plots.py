"""Figures the stages write: learning curves and open-loop predictions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def _finish_lines(fig, ax, path, xlabel: str, ylabel: str, title: str, legend_size: int) -> Path:
    """The line plots' common finish: labels, a small title, a light grid, the legend; saved."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    return _save(fig, path)


def learning_curve(curve: list[dict], path: str | os.PathLike, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = [c["step"] for c in curve]
    ax.plot(steps, [c["eval_return"] for c in curve], marker="o", label="eval return")
    ax.set_xlabel("agent steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def training_curves(trainings: list[dict], path: str | os.PathLike, title: str) -> Path:
    """Learning curves of several trainings (``training``, ``seed``, ``curve`` [[step, return]],
    ``threshold``): one colour per training, one line per seed, the threshold dashed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    names = list(dict.fromkeys(t["training"] for t in trainings))
    for t in trainings:
        steps, returns = zip(*t["curve"]) if t["curve"] else ((), ())
        ax.plot(steps, returns, marker=".", color=f"C{names.index(t['training'])}",
                label=f"{t['training']} seed {t['seed']}"
                + (f" (pretrain seed {t['pretrain_seed']})" if t.get("pretrain_seed") is not None else "")
                + ("" if t.get("finished", True) else " (stopped)"))
    for thr in {t["threshold"] for t in trainings if t.get("threshold") is not None}:
        ax.axhline(thr, color="k", ls="--", lw=0.8, label="learnt threshold")
    return _finish_lines(fig, ax, path, "agent steps", "eval return", title, 6)


def heldout_curve(points: list[dict], path: str | os.PathLike, title: str, kept: int | None = None) -> Path:
    """Held-out dynamics error vs adaptation updates: one panel per quantity (points: update,
    kl_filter, kl_open_loop, mse_open_loop); ``kept``: the update early stopping kept."""
    plt = _plt()
    names = [("kl_filter", "one-step KL (nats)"), ("kl_open_loop", "open-loop KL (nats)"),
             ("mse_open_loop", "open-loop decoded MSE")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    x = [p["update"] for p in points]
    for ax, (key, label) in zip(axes, names):
        ax.plot(x, [p[key] for p in points], marker=".")
        if kept is not None:
            ax.axvline(kept, color="k", ls="--", lw=0.8, label=f"kept: update {kept}")
            ax.legend(fontsize=7)
        ax.set_xlabel("adaptation updates")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def open_loop(truth: dict[str, np.ndarray], preds: dict[str, dict[str, np.ndarray]], path: str | os.PathLike,
              title: str, context: int = 0, max_frames: int = 10,
              names: dict[str, list[str]] | None = None) -> Path:
    """One example: images as strips (truth, then each prediction); vectors as one line plot per
    dimension with every prediction beside the truth. ``preds`` maps a label (e.g. "source
    model", "corrected") to that model's decoded predictions. ``names`` labels a vector key's
    dimensions (``DMCEnv.observation_names``, e.g. ``orientation[0]``); else ``key[d]``."""
    plt = _plt()
    image_keys = [k for k in truth if truth[k].ndim == 4]
    vector_keys = [k for k in truth if truth[k].ndim == 2]
    rows = (1 + len(preds)) * len(image_keys) + sum(truth[k].shape[-1] for k in vector_keys)
    fig = plt.figure(figsize=(max(6, max_frames * 0.8), 1.1 * rows + 0.6))
    grid = fig.add_gridspec(rows, max_frames if image_keys else 1)
    r = 0
    for k in image_keys:
        frames = np.linspace(0, len(truth[k]) - 1, min(max_frames, len(truth[k]))).astype(int)
        for label, source in (("truth", truth), *((name, p) for name, p in preds.items())):
            for c, f in enumerate(frames):
                ax = fig.add_subplot(grid[r, c])
                ax.imshow(np.clip(source[k][f], 0, 255).astype(np.uint8))
                ax.set_xticks([]), ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(label, fontsize=7)
                if label == "truth":
                    ax.set_title(f"+{f + 1}", fontsize=7)
            r += 1
    for k in vector_keys:
        for d in range(truth[k].shape[-1]):
            ax = fig.add_subplot(grid[r, :])
            steps = np.arange(1, len(truth[k]) + 1)
            ax.plot(steps, truth[k][:, d], color="k", label="truth")
            for name, p in preds.items():
                ax.plot(steps, p[k][:, d], "--", label=name)
            ax.set_ylabel(dimension_label(k, d, truth[k].shape[-1], names), fontsize=7)
            if d == 0:
                ax.legend(fontsize=6, loc="upper right")
            r += 1
    fig.suptitle(f"{title} (open loop after {context} observed steps)", fontsize=9)
    return _save(fig, path)


def dimension_label(key: str, d: int, size: int, names: dict[str, list[str]] | None) -> str:
    """Dimension ``d`` of observation ``key``: its name when ``names`` has one per dimension."""
    labels = (names or {}).get(key)
    return labels[d] if labels is not None and len(labels) == size else f"{key}[{d}]"


def horizon_curves(curves: dict[str, dict[str, list[float]]], path: str | os.PathLike, title: str) -> Path:
    """One panel per quantity (e.g. latent KL, decoded MSE), one line per model, x = horizon."""
    plt = _plt()
    names = list(next(iter(curves.values())))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for model, values in curves.items():
            ax.plot(np.arange(1, len(values[name]) + 1), values[name], label=model)
        ax.set_xlabel("open-loop horizon (agent steps)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def results_bars(rows: list[dict], path: str | os.PathLike, title: str) -> Path:
    """Mean return per method with its confidence interval (rows: method, mean, ci_low, ci_high)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.1 * len(rows) + 2, 3.4))
    x = np.arange(len(rows))
    means = np.array([r["mean"] for r in rows])
    err = np.array([[r["mean"] - r["ci_low"] for r in rows], [r["ci_high"] - r["mean"] for r in rows]])
    ax.bar(x, means, yerr=err, capsize=4, color=["#999999" if r.get("reference") else "C0" for r in rows])
    ax.set_xticks(x, [r["method"] for r in rows], rotation=20, fontsize=8)
    ax.set_ylabel("return (mean, 95% CI)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def data_efficiency(rows: list[dict], path: str | os.PathLike, title: str) -> Path:
    """Return vs target-data size, one line per method with its confidence band
    (rows: method, size, mean, ci_low, ci_high)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: r["size"])
        x = [p["size"] for p in pts]
        style = ":" if method in ("no_adapt", "oracle") else "-o"
        ax.plot(x, [p["mean"] for p in pts], style, label=method)
        ax.fill_between(x, [p["ci_low"] for p in pts], [p["ci_high"] for p in pts], alpha=0.15)
    ax.set_xscale("log")
    return _finish_lines(fig, ax, path, "target transitions", "target return (mean, 95% CI)", title, 7)


def adaptation_curves(curves: dict[str, dict], oracle: float | None, path: str | os.PathLike, title: str) -> Path:
    """Two panels per pair and setting: each method's policy return vs policy updates (the oracle's
    return dashed) and its held-out open-loop KL vs adaptation updates (``curves``: method ->
    ``policy`` and ``heldout`` [(x, y)], ``calibration_end``: where the policy stage's part starts)."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
    for i, (method, c) in enumerate(curves.items()):
        if c["policy"]:
            x, y = zip(*c["policy"])
            left.plot(x, y, marker=".", color=f"C{i}", label=method)
        if c["heldout"]:
            x, y = zip(*c["heldout"])
            right.plot(x, y, marker=".", color=f"C{i}", label=method)
            if c.get("calibration_end"):
                right.axvline(c["calibration_end"], color=f"C{i}", ls=":", lw=0.8)
    if oracle is not None:
        left.axhline(oracle, color="k", ls="--", lw=0.8, label="oracle (final)")
    for ax, xlabel, ylabel in ((left, "policy updates", "target return"),
                               (right, "adaptation updates", "held-out open-loop KL (nats)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def interval_panels(panels: dict[str, list[dict]], path: str | os.PathLike, title: str, xlabel: str,
                    lines: tuple[float, ...] = (), xlim: tuple[float, float] | None = None) -> Path:
    """One panel per key (e.g. a data regime), one horizontal interval per row (``label``,
    ``point``, ``low``, ``high``; ``highlight``: drawn in the first colour, the others grey), the
    values of ``lines`` dashed: an answer read at a glance."""
    plt = _plt()
    rows = max((len(r) for r in panels.values()), default=1)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.2, 0.42 * rows + 1.3),
                             squeeze=False, sharex=True)
    for ax, (name, items) in zip(axes[0], panels.items()):
        y = np.arange(len(items))[::-1]
        for yi, r in zip(y, items):
            colour = "C0" if r.get("highlight") else "#777777"
            if np.isfinite(r["low"]) and np.isfinite(r["high"]):
                ax.plot([r["low"], r["high"]], [yi, yi], color=colour, lw=5, alpha=0.45, solid_capstyle="butt")
            ax.plot([r["point"]], [yi], "o", color=colour)
        for value in lines:
            ax.axvline(value, color="k", ls="--", lw=0.8)
        ax.set_yticks(y, [r["label"] for r in items], fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        if xlim:
            ax.set_xlim(*xlim)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def score_profiles(panels: dict[str, dict[str, tuple]], taus: np.ndarray, path: str | os.PathLike, title: str,
                   xlabel: str, lines: tuple[float, ...] = ()) -> Path:
    """Performance profiles: per panel (a data regime), per method the share of runs scoring above
    each tau with its band (``panels``: name -> method -> (profile, low, high))."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6.5, 4.2 * len(panels)), 3.6), squeeze=False, sharey=True)
    for ax, (name, profiles) in zip(axes[0], panels.items()):
        for i, (method, (profile, low, high)) in enumerate(profiles.items()):
            ax.plot(taus, profile, color=f"C{i}", label=method)
            ax.fill_between(taus, low, high, color=f"C{i}", alpha=0.15)
        for value in lines:
            ax.axvline(value, color="k", ls="--", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of runs above")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)

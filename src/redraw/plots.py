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


def open_loop(truth: dict[str, np.ndarray], pred: dict[str, np.ndarray], path: str | os.PathLike, title: str,
              context: int = 0, max_frames: int = 10) -> Path:
    """One example: images as truth/prediction strips; vectors as one line plot per dimension."""
    plt = _plt()
    image_keys = [k for k in truth if truth[k].ndim == 4]
    vector_keys = [k for k in truth if truth[k].ndim == 2]
    rows = 2 * len(image_keys) + sum(truth[k].shape[-1] for k in vector_keys)
    fig = plt.figure(figsize=(max(6, max_frames * 0.8), 1.1 * rows + 0.6))
    grid = fig.add_gridspec(rows, max_frames if image_keys else 1)
    r = 0
    for k in image_keys:
        frames = np.linspace(0, len(truth[k]) - 1, min(max_frames, len(truth[k]))).astype(int)
        for label, source in (("truth", truth), ("prediction", pred)):
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
            ax.plot(steps, truth[k][:, d], label="truth")
            ax.plot(steps, pred[k][:, d], "--", label="prediction")
            ax.set_ylabel(f"{k}[{d}]", fontsize=7)
            if r == 0 or d == 0:
                ax.legend(fontsize=6, loc="upper right")
            r += 1
    fig.suptitle(f"{title} (open loop after {context} observed steps)", fontsize=9)
    return _save(fig, path)

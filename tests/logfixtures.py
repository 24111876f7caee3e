"""Tiny robot logs written locally (no downloads) with known generating signals.

Every stream is a function of time, so a test can compute what the resampled episode must hold:
``pos(t, j)``, ``vel(t, j)`` for joint ``j``, ``cmd(t)`` for the command, and images whose red
channel is a constant that encodes the frame index (``frame_code``) over a fixed checkerboard
(so no frame is blank to the validation).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import yaml

ENV = "pendulum-swingup-reversed"  # proprio state: 3 dims; pixels velocity: 1 dim; action: 1


def pos(t, j=0):
    return np.sin(2 * np.pi * 0.5 * np.asarray(t) + j)


def vel(t, j=0):
    return np.cos(2 * np.pi * 0.5 * np.asarray(t) + j) * (1.0 + j)


def cmd(t):
    return 0.5 * np.sin(2 * np.pi * 0.3 * np.asarray(t))


def frame_code(i):
    return (np.asarray(i) * 7) % 200 + 20


def decode_code(images: np.ndarray) -> np.ndarray:
    """Frame index codes back from images (the red channel's mean)."""
    return np.round(images[..., 0].reshape(len(images), -1).mean(axis=1)).astype(int)


def image(i, h=48, w=64):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = frame_code(i)
    yy, xx = np.mgrid[:h, :w]
    img[..., 1] = np.where(((yy // 4) + (xx // 4)) % 2 == 0, 200, 40)
    img[..., 2] = 90
    return img


def jpeg(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# -- HDF5 ---------------------------------------------------------------------------------------
def write_aloha(path: Path, n: int = 120, rate: float = 50.0, compress: bool = False) -> Path:
    import h5py

    t = np.arange(n) / rate
    with h5py.File(path, "w") as f:
        f.attrs["sim"] = False
        f.attrs["compress"] = compress
        obs = f.create_group("observations")
        obs["qpos"] = np.stack([pos(t, j) for j in range(14)], axis=1)
        obs["qvel"] = np.stack([vel(t, j) for j in range(14)], axis=1)
        obs["effort"] = np.zeros((n, 14))
        frames = [image(i) for i in range(n)]
        if compress:
            enc = [np.frombuffer(jpeg(im), np.uint8) for im in frames]
            pad = max(len(e) for e in enc)
            arr = np.zeros((n, pad), np.uint8)
            for i, e in enumerate(enc):
                arr[i, : len(e)] = e
            obs.create_dataset("images/cam_high", data=arr)
        else:
            obs.create_dataset("images/cam_high", data=np.stack(frames))
        f["action"] = np.stack([cmd(t)] + [np.zeros(n)] * 13, axis=1)
    return path


def write_robomimic(path: Path, lengths=(60, 50, 70), rate: float = 20.0) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for d, n in zip((0, 10, 2), lengths):  # out of numeric-name order on purpose
            t = np.arange(n) / rate + d
            g = data.create_group(f"demo_{d}")
            g.attrs["num_samples"] = n
            g["obs/robot0_joint_vel"] = np.stack([vel(t, j) for j in range(7)], axis=1)
            g["obs/agentview_image"] = np.stack([image(i + 1000 * d, 84, 84) for i in range(n)])
            g["actions"] = np.stack([cmd(t)] + [np.zeros(n)] * 6, axis=1)
            g["rewards"] = (np.arange(n) % 5 == 0).astype(np.float64)
            g["dones"] = np.zeros(n)
    return path

"""HDF5 teleoperation logs via h5py: the ALOHA/ACT and robomimic layouts, or any fixed-rate file.

* ``aloha``: one episode per file; ``observations/{qpos,qvel,effort}`` (T, 14),
  ``observations/images/<camera>`` (T, H, W, 3) uint8 (or JPEG bytes padded to a fixed length
  when the file's ``compress`` attribute is set), ``action`` (T, 14); 50 rows per second.
* ``robomimic``: one file, one episode per ``data/demo_<N>`` group (in N order):
  ``obs/<key>``, ``actions``, ``rewards``; paths are relative to the demo group; 20 per second.
* no preset: one episode per file, absolute dataset paths, ``source.rate`` rows per second.

Row t's action is the one commanded after observation t (``action.timing: after``).
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from redraw.data.importers.config import ImportConfig
from redraw.data.importers.images import Shaper, decode_bytes, to_rgb
from redraw.data.importers.resample import Stream, Unit, row_times
from redraw.data.schema import DataError

_ALOHA_ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
ALOHA_NAMES = [f"{side}_{j}" for side in ("left", "right") for j in _ALOHA_ARM]
PRESETS = {
    "aloha": {"rate": 50.0, "paths": {"observations.image": "observations/images/cam_high",
                                      "observations.velocity": "observations/qvel",
                                      "observations.state": "observations/qpos", "action": "action"},
              "names": {"observations/qpos": ALOHA_NAMES, "observations/qvel": ALOHA_NAMES,
                        "observations/effort": ALOHA_NAMES, "action": ALOHA_NAMES}},
    "robomimic": {"rate": 20.0, "paths": {"observations.image": "obs/agentview_image",
                                          "observations.velocity": "obs/robot0_joint_vel", "action": "actions"},
                  "names": {}},
}


def _files(cfg: ImportConfig) -> list[Path]:
    out = []
    for i, p in enumerate(cfg.source.paths):
        path = cfg.resolve(p)
        if path.is_dir():
            found = sorted(q for q in path.iterdir() if q.suffix in (".hdf5", ".h5", ".he5"))
            if not found:
                raise DataError(path, f"source.paths[{i}]", "directory holds no .hdf5/.h5 files")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise DataError(path, f"source.paths[{i}]", "no such file or directory")
    return out


def _groups(h5: h5py.File, preset: str | None, file: Path) -> list[tuple[str, h5py.Group]]:
    if preset != "robomimic":
        return [(file.stem, h5)]
    if "data" not in h5:
        raise DataError(file, "source.preset", "robomimic files hold their demos under 'data/', this one has none")
    demos = [k for k in h5["data"] if re.fullmatch(r"demo_\d+", k)]
    return [(k, h5["data"][k]) for k in sorted(demos, key=lambda k: int(k.split("_")[1]))]


def _dataset(group: h5py.Group, path: str, file: Path, key: str) -> h5py.Dataset:
    node = group.get(path)
    if not isinstance(node, h5py.Dataset):
        have = []
        group.visititems(lambda name, obj: have.append(name) if isinstance(obj, h5py.Dataset) else None)
        raise DataError(file, f"{key}.path", f"no dataset {path!r} in {group.name} (datasets: {', '.join(have[:20])})")
    return node


def _image_take(ds: h5py.Dataset, compressed: bool, shaper: Shaper, file: str, key: str):
    def take(idx: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(idx, return_inverse=True)
        raw = ds[uniq]  # h5py reads increasing indices in one call
        frames = [shaper(decode_bytes(r, file, key, ds.name) if compressed else to_rgb(r, file, key, ds.name))
                  for r in raw]
        return np.stack(frames)[inv]
    return take


def units(cfg: ImportConfig):
    files = _files(cfg)
    return (None if cfg.source.preset == "robomimic" else len(files)), _units(cfg, files)


def _units(cfg: ImportConfig, files: list[Path]):
    preset = PRESETS.get(cfg.source.preset or "", {"rate": None, "paths": {}, "names": {}})
    rate = cfg.source.rate or preset["rate"]
    for file in files:
        try:
            h5 = h5py.File(file, "r")
        except OSError as exc:
            raise DataError(file, "source.paths", f"not a readable HDF5 file ({exc})") from None
        with h5:
            compressed = bool(h5.attrs.get("compress", False))
            for label, group in _groups(h5, cfg.source.preset, file):
                streams, length = {}, None
                for key, spec in cfg.streams():
                    path = spec.path or preset["paths"].get(key)
                    if path is None:
                        raise DataError(cfg.config_path, f"{key}.path", f"missing, and preset {cfg.source.preset!r} "
                                        "has no default for it")
                    ds = _dataset(group, path, file, key)
                    n = len(ds)
                    if length is not None and n != length:
                        raise DataError(file, f"{key}.path", f"{path!r} has {n} rows, other streams {length}")
                    length = n
                    if key == "observations.image":
                        obs = cfg.observations["image"]
                        shaper = Shaper(cfg.target.image_size, obs.crop, obs.colour, str(file), key, path)
                        streams[key] = Stream(key, path, row_times(np.arange(n), rate),
                                              _image_take(ds, compressed, shaper, str(file), key), image=True)
                        continue
                    if not np.issubdtype(ds.dtype, np.number):
                        raise DataError(file, f"{key}.path", f"{path!r} has dtype {ds.dtype}, expected numbers")
                    arr = np.asarray(ds[()], np.float64).reshape(n, -1)
                    names = preset["names"].get(path)
                    streams[key] = Stream(key, path, row_times(np.arange(n), rate), arr.__getitem__,
                                          names if names and len(names) == arr.shape[1] else None, arr.shape[1])
                yield Unit(str(file), label, streams, table_rate=rate, info={"rows": length})


def inspect(path: str) -> list[dict]:
    """Every dataset of an HDF5 file (the first demo of a robomimic file) with shape and dtype."""
    out = []
    with h5py.File(path, "r") as h5:
        root = h5
        if "data" in h5 and isinstance(h5["data"], h5py.Group):
            demos = sorted(k for k in h5["data"] if k.startswith("demo_"))
            if demos:
                root = h5["data"][demos[0]]
                out.append({"stream": "data/demo_*", "type": "groups", "count": len(demos)})
        root.visititems(lambda name, obj: out.append(
            {"stream": name, "type": str(obj.dtype), "count": int(obj.shape[0]) if obj.shape else 1,
             "shape": list(obj.shape[1:])}) if isinstance(obj, h5py.Dataset) else None)
        if h5.attrs.get("compress", False):
            out.append({"stream": "attrs.compress", "type": "images are JPEG bytes", "count": 1})
    return out

"""Readers that turn recorded robot logs into schema episodes through a mapping config.

One module per format, each imported only when used (its library is an optional extra:
``pip install redraw[import]``): ``rosbag`` (ROS 1/2 bags and bare MCAP, via rosbags),
``lerobot`` (LeRobot v2.1/v3.0 via pyarrow and PyAV), ``hdf5`` (ALOHA and robomimic layouts,
via h5py). Each exposes ``units(cfg) -> (count, iterator of resample.Unit)`` and
``inspect(path) -> list of stream descriptions``.
"""

from __future__ import annotations

import importlib

FORMATS = ("rosbag", "lerobot", "hdf5")
_EXTRA = {"rosbag": "rosbags", "lerobot": "pyarrow and av", "hdf5": "h5py"}


def _module(fmt: str):
    if fmt not in FORMATS:
        raise ValueError(f"unknown source format {fmt!r}; known: {', '.join(FORMATS)}")
    try:
        return importlib.import_module(f"redraw.data.importers.{fmt}")
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"reading {fmt} sources needs {_EXTRA[fmt]} ({exc}); install them with "
                                  "`pip install 'redraw[import]'`") from None


def reader(fmt: str):
    """``units(cfg)`` of the format's reader module."""
    return _module(fmt).units


def inspector(fmt: str):
    return _module(fmt).inspect

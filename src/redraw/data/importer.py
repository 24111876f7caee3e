"""``redraw data import``: bring external (e.g. real-robot) episodes into the project.

Either the source directory already meets the episode schema (docs/episode-schema.md), or a
mapping config (docs/import.md) says how to convert a ROS bag, LeRobot dataset or HDF5 log
into it. Either way the data is validated with the same contract as the target-data stage
*before* it reaches the destination: it is staged in a temporary sibling and renamed into
place, so a rejected, failed or interrupted import leaves the destination as it was.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from redraw.data.episodes import list_episodes
from redraw.data.schema import METADATA_FILE


class ImportRejected(Exception):
    def __init__(self, result):
        self.result = result
        super().__init__(f"{result.directory}: rejected by validation ({len(result.failures)} failed checks)")


def import_dataset(src: str | os.PathLike, dest: str | os.PathLike, config, replace: bool = False):
    """Validate ``src`` with ``config`` (a ValidationConfig) and copy it to ``dest``.

    Returns the ValidationResult. Raises ImportRejected (nothing copied) when validation fails,
    FileExistsError when ``dest`` holds data and ``replace`` is False.
    """
    from redraw.validation import validate_dataset

    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such directory")
    if src.resolve() == dest.resolve():
        raise ValueError(f"{src}: source and destination are the same directory")
    if dest.exists() and any(dest.iterdir()) and not replace:
        raise FileExistsError(f"{dest}: destination holds data; pass --replace to swap it for {src}")
    result = validate_dataset(src, config)
    if not result.success:
        raise ImportRejected(result)

    def fill(tmp: Path) -> None:
        for path in [src / METADATA_FILE, *list_episodes(src)]:
            shutil.copy2(path, tmp / path.name)

    _stage(dest, fill)
    return result


def import_logs(mapping, dest: str | os.PathLike, config, replace: bool = False, progress: bool = True):
    """Convert the log that ``mapping`` (an ImportConfig, or the path of its YAML file) describes,
    validate the result with ``config`` (a ValidationConfig) and put it at ``dest``.

    Returns (ValidationResult, import record). Raises DataError for bad config or source (nothing
    written), ImportRejected when the converted data fails validation (nothing written).
    """
    from redraw.data.importers.config import ImportConfig, load_config
    from redraw.data.importers.convert import convert
    from redraw.validation import validate_dataset

    cfg = mapping if isinstance(mapping, ImportConfig) else load_config(mapping)
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()) and not replace:
        raise FileExistsError(f"{dest}: destination holds data; pass --replace to swap it for the import")
    box: dict = {}

    def fill(tmp: Path) -> None:
        box["record"] = convert(cfg, tmp, progress=progress)
        box["result"] = result = validate_dataset(tmp, config)
        if not result.success:
            result.directory = str(dest)
            raise ImportRejected(result)

    _stage(dest, fill)
    return box["result"], box["record"]


def _stage(dest: Path, fill) -> None:
    """Build the data set with ``fill(tmp)`` in a temporary sibling, then swap it in for ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

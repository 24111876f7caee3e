"""``redraw data import``: bring external (e.g. real-robot) episodes into the project.

The source directory must meet the episode schema (docs/episode-schema.md). It is validated
with the same contract as the target-data stage *before* anything is copied; the copy goes to a
temporary sibling and is renamed into place, so a rejected or interrupted import leaves the
destination as it was.
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
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for path in [src / METADATA_FILE, *list_episodes(src)]:
            shutil.copy2(path, tmp / path.name)
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
    return result

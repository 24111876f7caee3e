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

    stage_atomically(dest, fill)
    return result


def import_logs(mapping, dest: str | os.PathLike, config, replace: bool = False, progress: bool = True,
                params: dict | None = None, params_path: str = "params.yaml"):
    """Convert the log that ``mapping`` (an ImportConfig, or the path of its YAML file) describes,
    validate the result with ``config`` (a ValidationConfig) and put it at ``dest``. ``params``
    (the project's, from ``params_path``) give ``env.pairs``, ``env.action_repeat`` and
    ``env.source``: the data's rate and sizes must fit that env (``convert.check_rate``).

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
        box["record"] = convert(cfg, tmp, progress=progress, params=params, params_path=str(params_path))
        box["result"] = result = validate_dataset(tmp, config)
        result.directory = str(dest)
        if not result.success:
            for failure in result.failures:  # name the files where they would have been, not the staging folder
                failure.file = failure.file.replace(str(tmp), str(dest))
                failure.message = failure.message.replace(str(tmp), str(dest))
            raise ImportRejected(result)

    stage_atomically(dest, fill)
    return box["result"], box["record"]


#: metadata fields every part of a merge must share: the episodes must mean the same thing
MERGE_FIELDS = ("env", "obs_mode", "control_hz", "action_size", "action_low", "action_high", "observations",
                "action_repeat")
#: compared only between simulator parts: an imported log records its rows as the control steps
#: (action_repeat 1) whatever repeat the simulator's data of the same agent-step rate (control_hz) had
SIMULATOR_FIELDS = ("action_repeat",)


def parse_part(text: str) -> tuple[Path, int | None]:
    """``DIR`` (all of its episodes) or ``DIR:N`` (its first N) -> (directory, N or None)."""
    head, sep, tail = str(text).rpartition(":")
    if sep and tail.isdigit() and head:
        if int(tail) < 1:
            raise ValueError(f"{text}: the episode count after ':' must be at least 1")
        return Path(head), int(tail)
    return Path(text), None


def merge_datasets(parts: list[tuple[str | os.PathLike, int | None]], dest: str | os.PathLike, config=None,
                   replace: bool = False, behaviour: str | None = None):
    """One data set at ``dest`` from the episodes of ``parts`` (directory, first N episodes or None
    for all), in order and renumbered: e.g. the expert's data and the logged episodes of a policy
    deployed on the robot, to calibrate again on both. The parts must share ``MERGE_FIELDS`` of
    their metadata (DataError names the part's metadata.json and the field). The result's metadata
    is the first part's, its behaviour naming every part (or ``behaviour``) and ``extra.merged_from``
    listing them. With ``config`` (a ValidationConfig) the merged data are validated before they
    reach ``dest`` (ImportRejected: nothing written). Episodes are hard links where the file system
    allows, copies otherwise. Returns the ValidationResult (None without ``config``)."""
    from dataclasses import asdict

    from redraw.data.episodes import episode_name
    from redraw.data.schema import DataError, read_metadata, write_metadata
    from redraw.validation import validate_dataset

    dest = Path(dest)
    if not parts:
        raise ValueError("merge: no data sets given")
    if dest.exists() and any(dest.iterdir()) and not replace:
        raise FileExistsError(f"{dest}: destination holds data; pass --replace to swap it for the merge")
    metas, episodes = [], []
    for directory, count in parts:
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: no such directory")
        if directory.resolve() == dest.resolve():
            raise ValueError(f"{directory}: a part of the merge is its destination")
        meta = read_metadata(directory)
        found = list_episodes(directory)
        if count is not None and count > len(found):
            raise DataError(directory, None, f"{len(found)} episodes, the first {count} asked for")
        if not found:
            raise DataError(directory, None, "no episode files (episode-*.npz)")
        if metas:
            first, mine = asdict(metas[0]), asdict(meta)
            for key in MERGE_FIELDS:
                if key in SIMULATOR_FIELDS and {metas[0].source, meta.source} != {"simulator"}:
                    continue
                if first[key] != mine[key]:
                    raise DataError(directory / METADATA_FILE, key, f"{mine[key]!r} where {Path(parts[0][0])} has "
                                    f"{first[key]!r}: the parts of a merge must share it")
        metas.append(meta)
        episodes.append(found[:count] if count is not None else found)
    merged = metas[0]
    merged.behaviour = behaviour or " + ".join(f"{m.behaviour} ({len(e)} episodes of {Path(d)})"
                                               for m, e, (d, _) in zip(metas, episodes, parts))
    merged.extra = {**merged.extra, "merged_from": [
        {"path": str(Path(d)), "episodes": len(e), "behaviour": m.behaviour, "source": m.source}
        for m, e, (d, _) in zip(metas, episodes, parts)]}
    if any(m.source != merged.source for m in metas):
        merged.source = "+".join(dict.fromkeys(m.source for m in metas))
    box: dict = {}

    def fill(tmp: Path) -> None:
        origin = {}  # a merged episode's file -> the part's file it came from, for the failures
        for i, src in enumerate(ep for part in episodes for ep in part):
            origin[str(tmp / episode_name(i))] = str(src)
            try:
                os.link(src, tmp / episode_name(i))
            except OSError:  # another file system: copy
                shutil.copy2(src, tmp / episode_name(i))
        write_metadata(tmp, merged)
        if config is not None:
            box["result"] = result = validate_dataset(tmp, config)
            result.directory = str(dest)
            if not result.success:
                for failure in result.failures:
                    failure.file = origin.get(failure.file, failure.file.replace(str(tmp), str(dest)))
                raise ImportRejected(result)

    stage_atomically(dest, fill)
    return box.get("result")


def stage_atomically(dest: Path, fill) -> Path:
    """Build ``dest`` (a data set, a robot's logs) with ``fill(tmp)`` in a temporary sibling, then swap it in.
    On failure nothing is left: neither the sibling nor the parent folders made for it."""
    made = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]  # deepest first
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
        for parent in made:
            try:
                parent.rmdir()
            except OSError:  # something else was put there meanwhile
                break
        raise
    return dest

"""LeRobot datasets, v2.1 (one parquet and mp4 per episode) and v3.0 (many episodes per file),
read with pyarrow and PyAV; the ``lerobot`` package is not needed.

``meta/info.json`` gives ``fps``, ``features``, ``data_path`` and ``video_path``. The rows of
``data/**/*.parquet`` are grouped by ``episode_index`` and ordered by ``frame_index``; row
times are ``frame_index / fps`` (the ``timestamp`` column is checked against them). A
``video`` feature is decoded from its mp4 (v3.0: from the episode's ``from_timestamp`` in the
shared file, per ``meta/episodes/``); an ``image`` feature is decoded from the bytes stored in
the parquet. LeRobot's row t holds the action sent *after* observation t: ``action.timing``
defaults to ``after``, so it moves to row t + 1 (docs/episode-schema.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from redraw.data.importers.config import ImportConfig
from redraw.data.importers.images import Shaper, decode_bytes, to_rgb
from redraw.data.importers.resample import NS, Stream, Unit, check_increasing, jitter_stats, row_times
from redraw.data.schema import DataError

VERSIONS = ("v2.0", "v2.1", "v3.0")


def read_info(root: Path) -> dict:
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise DataError(path, "source.paths", "not a LeRobot dataset: no meta/info.json")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(path, None, f"not valid JSON: {exc}") from None
    for field in ("codebase_version", "fps", "features"):
        if field not in info:
            raise DataError(path, field, "missing from a LeRobot info.json")
    if info["codebase_version"] not in VERSIONS:
        raise DataError(path, "codebase_version", f"{info['codebase_version']!r} is not supported ({', '.join(VERSIONS)})")
    return info


def _names(feature: dict) -> list[str] | None:
    names = feature.get("names")
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    return [str(n) for n in names] if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def _table(root: Path, columns: list[str]) -> pa.Table:
    files = sorted((root / "data").rglob("*.parquet"))
    if not files:
        raise DataError(root / "data", "source.paths", "no parquet files under data/")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def _episode_meta(root: Path, info: dict) -> dict[int, dict]:
    """v3.0: episode index -> its row of meta/episodes/**.parquet (video file and offset)."""
    if info["codebase_version"] != "v3.0":
        return {}
    files = sorted((root / "meta" / "episodes").rglob("*.parquet"))
    rows = pa.concat_tables([pq.read_table(f) for f in files]).to_pylist() if files else []
    return {int(r["episode_index"]): r for r in rows}


def _video_file(root: Path, info: dict, key: str, ep: int, meta: dict[int, dict]) -> tuple[Path, float]:
    if info["codebase_version"] == "v3.0":
        row = meta.get(ep)
        if row is None or f"videos/{key}/chunk_index" not in row:
            raise DataError(root / "meta" / "episodes", f"observations.image.key", f"no video entry for {key!r}, "
                            f"episode {ep}")
        rel = info["video_path"].format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                        file_index=row[f"videos/{key}/file_index"])
        return root / rel, float(row[f"videos/{key}/from_timestamp"])
    chunk = ep // int(info.get("chunks_size", 1000))
    return root / info["video_path"].format(episode_chunk=chunk, video_key=key, episode_index=ep), 0.0


def decode_video(path: Path, start: float, frames: np.ndarray, fps: float, shaper: Shaper, key: str) -> np.ndarray:
    """Frames ``frames`` (indices from ``start`` seconds at ``fps``) of a video, shaped; never interpolated."""
    if not path.is_file():
        raise DataError(path, f"{key}.key", "video file missing")
    want = {int(f): None for f in frames}
    last = start + (max(want) + 0.5) / fps
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if start > 0:
            container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base)
            if t > last:
                break
            idx = int(round((t - start) * fps))
            if idx in want and abs(t - start - idx / fps) < 0.5 / fps:
                want[idx] = shaper(frame.to_ndarray(format="rgb24"))
    missing = [i for i, v in want.items() if v is None]
    if missing:
        raise DataError(path, f"{key}.key", f"no frame at {len(missing)} row time(s), first frame_index "
                        f"{missing[0]} ({start + missing[0] / fps:.4f} s)")
    return np.stack([want[int(f)] for f in frames])


def _roots(cfg: ImportConfig) -> list[Path]:
    out = []
    for i, p in enumerate(cfg.source.paths):
        root = cfg.resolve(p)
        if not root.is_dir():
            raise DataError(root, f"source.paths[{i}]", "no such dataset directory")
        out.append(root)
    return out


def units(cfg: ImportConfig):
    plans = [(root, *_plan(cfg, root)) for root in _roots(cfg)]
    total = sum(len(eps) for _, _, _, eps in plans)
    return total, (u for root, info, table, eps in plans for u in _units(cfg, root, info, table, eps))


def _plan(cfg: ImportConfig, root: Path):
    info = read_info(root)
    info_path = root / "meta" / "info.json"
    features = info["features"]
    for key, spec in cfg.streams():
        if spec.key not in features:
            raise DataError(info_path, f"{key}.key", f"no feature {spec.key!r} (features: {', '.join(features)})")
        kind = features[spec.key].get("dtype")
        if (key == "observations.image") != (kind in ("video", "image")):
            raise DataError(info_path, f"{key}.key", f"{spec.key!r} has dtype {kind!r}, " +
                            ("not an image or video" if key == "observations.image" else "not a vector"))
    inline = [s.key for k, s in cfg.streams() if features[s.key].get("dtype") != "video"]
    table = _table(root, sorted({"episode_index", "frame_index", "timestamp", *inline}))
    episodes = np.unique(table["episode_index"].to_numpy())
    if cfg.source.episodes is not None:
        unknown = sorted(set(cfg.source.episodes) - set(episodes.tolist()))
        if unknown:
            raise DataError(root, "source.episodes", f"no episode {unknown[0]} (the dataset has {len(episodes)})")
        episodes = [e for e in episodes if e in set(cfg.source.episodes)]
    return info, table, [int(e) for e in episodes]


def _vectors(col: pa.ChunkedArray, n: int) -> np.ndarray:
    col = col.combine_chunks()
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        flat = pc.list_flatten(col).to_numpy(zero_copy_only=False)
        return np.asarray(flat, np.float64).reshape(n, -1)
    return np.asarray(col.to_numpy(zero_copy_only=False), np.float64).reshape(n, -1)


def _units(cfg: ImportConfig, root: Path, info: dict, table: pa.Table, episodes: list[int]):
    fps = float(info["fps"])
    features, meta = info["features"], _episode_meta(root, info)
    ep_col = table["episode_index"].to_numpy()
    data_file = str(root / "data")
    for ep in episodes:
        rows = table.filter(pa.array(ep_col == ep))
        n = rows.num_rows
        frame = rows["frame_index"].to_numpy().astype(np.int64)
        t = row_times(frame, fps)
        label = f"episode {ep}"
        check_increasing(t, data_file, "frame_index", f"{label} frame_index")
        stamps = np.round(rows["timestamp"].to_numpy().astype(np.float64) * NS).astype(np.int64)
        off = np.abs(stamps - t)
        if off.max() > 0.5 * NS / fps:
            i = int(off.argmax())
            raise DataError(data_file, "timestamp", f"{label}: timestamp {stamps[i] / NS:.4f} s disagrees with "
                            f"frame_index {frame[i]} / fps {fps:g} by more than half a frame")
        streams = {}
        for key, spec in cfg.streams():
            feature = features[spec.key]
            if key == "observations.image":
                obs = cfg.observations["image"]
                if feature["dtype"] == "video":
                    path, start = _video_file(root, info, spec.key, ep, meta)
                    shaper = Shaper(cfg.target.image_size, obs.crop, obs.colour, str(path), key, spec.key)
                    images = decode_video(path, start, frame, fps, shaper, key)
                    take = images.__getitem__
                else:
                    shaper = Shaper(cfg.target.image_size, obs.crop, obs.colour, data_file, key, spec.key)
                    take = _inline_images(rows[spec.key].to_pylist(), shaper, data_file, key, spec.key)
                streams[key] = Stream(key, spec.key, t, take, image=True)
                continue
            arr = _vectors(rows[spec.key], n)
            names = _names(feature)
            streams[key] = Stream(key, spec.key, t, arr.__getitem__,
                                  names if names and len(names) == arr.shape[1] else None, arr.shape[1])
        yield Unit(data_file, label, streams, table_rate=fps, info={"rows": n, "version": info["codebase_version"]})


def _inline_images(cells: list, shaper: Shaper, file: str, key: str, where: str):
    def take(idx: np.ndarray) -> np.ndarray:
        out = []
        for i in idx:
            cell = cells[int(i)]
            if isinstance(cell, dict) and cell.get("bytes") is not None:
                out.append(shaper(decode_bytes(cell["bytes"], file, key, where)))
            elif cell is not None and not isinstance(cell, dict):
                out.append(shaper(to_rgb(np.asarray(cell, np.uint8), file, key, where)))
            else:
                raise DataError(file, key, f"{where!r} row {int(i)}: no image bytes stored in the parquet")
        return np.stack(out)
    return take


def inspect(path: str) -> list[dict]:
    """Features of a LeRobot dataset with dtype, shape and names; row timing of its episodes."""
    root = Path(path)
    info = read_info(root)
    table = _table(root, ["episode_index", "frame_index", "timestamp"])
    eps = table["episode_index"].to_numpy()
    ts = np.round(table["timestamp"].to_numpy().astype(np.float64) * NS).astype(np.int64)
    out = [{"stream": "<rows>", "type": info["codebase_version"], "episodes": int(len(np.unique(eps))),
            **jitter_stats(ts[eps == eps[0]]), "fps": info["fps"]}]
    for name, feature in info["features"].items():
        out.append({"stream": name, "type": feature.get("dtype"), "shape": feature.get("shape"),
                    **({"names": _names(feature)} if _names(feature) else {})})
    return out

"""ROS 1 bags, ROS 2 bags (sqlite3 ``.db3`` and MCAP) and bare ``.mcap`` files via ``rosbags``.

Pure Python: no ROS installation. Message definitions come from the bag when it carries them
(ROS 1, MCAP, rosbag2 >= Iron), else from ``source.typestore`` (a ROS distro's standard types)
plus ``source.msg_types`` (custom ``.msg`` files). A path is a bag or a folder of bags; each bag
is one recording unit; a stream is a ``topic`` and a ``field`` (dotted attribute; a list
concatenates), stamped by log time or by ``header.stamp`` (``time``). ``sensor_msgs/Image`` (any row padding) and ``CompressedImage``
are decoded, cropped and resized as they are read, so only target-size frames are kept.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import closing
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from redraw.data.importers.config import ImportConfig
from redraw.data.importers.images import Shaper, decode_bytes, decode_ros_image
from redraw.data.importers.resample import Stream, Unit, jitter_stats
from redraw.data.importers.survey import bag_paths
from redraw.data.schema import DataError

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/Image")
COMPRESSED_TYPES = ("sensor_msgs/msg/CompressedImage", "sensor_msgs/CompressedImage")


def typestore(cfg: ImportConfig | None):
    name = cfg.source.typestore if cfg is not None else "ros2_humble"
    try:
        store = get_typestore(Stores(name))
    except ValueError:
        raise DataError(cfg.config_path if cfg else "<config>", "source.typestore",
                        f"unknown typestore {name!r}; known: {', '.join(s.value for s in Stores)}") from None
    if cfg is not None:
        for msgtype, file in cfg.source.msg_types.items():
            try:
                store.register(get_types_from_msg(cfg.resolve(file).read_text(), msgtype))
            except Exception as exc:  # rosbags raises several parser errors
                raise DataError(cfg.resolve(file), f"source.msg_types.{msgtype}", f"not a valid .msg definition "
                                f"({type(exc).__name__}: {exc})") from None
    return store


def _paths(cfg: ImportConfig) -> list[Path]:
    """Every bag of ``source.paths``: a bag, or a folder of bags (each bag directly in it)."""
    out: list[Path] = []
    for i, p in enumerate(cfg.source.paths):
        path = cfg.resolve(p)
        if not path.exists():
            raise DataError(path, f"source.paths[{i}]", "no such bag (a rosbag2 directory, a .bag, .db3 or .mcap file, "
                            "or a folder of them)")
        found = bag_paths(path)
        if not found:
            raise DataError(path, f"source.paths[{i}]", "neither a bag nor a folder of bags (rosbag2 directories with "
                            "metadata.yaml, .bag, .db3 or .mcap files)")
        for bag in found:
            if bag.resolve() in {q.resolve() for q in out}:
                raise DataError(bag, f"source.paths[{i}]", "this bag is listed twice")
            out.append(bag)
    return out


def units(cfg: ImportConfig):
    paths = _paths(cfg)
    return len(paths), (_unit(cfg, p) for p in paths)


def _attr(msg, dotted: str):
    for part in dotted.split("."):
        msg = getattr(msg, part)
    return msg


def _open(path: Path, store) -> AnyReader:
    try:
        reader = AnyReader([path], default_typestore=store)
        reader.open()
    except (AnyReaderError, Exception) as exc:  # rosbags' reader errors carry no common base
        raise DataError(path, "source.paths", f"cannot open as a bag ({type(exc).__name__}: {exc})") from None
    for name, fields in store.fielddefs.items():  # custom types for bags that carry no definitions
        if name not in reader.typestore.fielddefs:
            reader.typestore.register({name: fields})
    return reader


def _unit(cfg: ImportConfig, path: Path) -> Unit:
    file = str(path)
    reader = _open(path, typestore(cfg))
    with closing(reader):
        topics = reader.topics
        by_topic: dict[str, list[str]] = defaultdict(list)
        specs = dict(cfg.streams())
        for key, spec in specs.items():
            if spec.topic not in topics:
                raise DataError(file, f"{key}.topic", f"no topic {spec.topic!r} in the bag (topics: "
                                f"{', '.join(sorted(topics))})")
            msgtype = topics[spec.topic].msgtype
            is_image = msgtype in IMAGE_TYPES + COMPRESSED_TYPES
            if (key == "observations.image") != is_image:
                raise DataError(file, f"{key}.topic", f"{spec.topic!r} carries {msgtype}, " +
                                ("not an image" if key == "observations.image" else "an image, not a vector"))
            if not is_image and spec.field is None:
                fields = [f for f in reader.typestore.fielddefs.get(msgtype, ((), []))[1]]
                raise DataError(cfg.config_path, f"{key}.field", f"missing: which field of {msgtype} on "
                                f"{spec.topic!r} (fields: {', '.join(f[0] for f in fields)})")
            by_topic[spec.topic].append(key)
        t = {k: [] for k in specs}
        rows = {k: [] for k in specs}
        names: dict[str, list[str] | None] = {}
        shapers = {k: Shaper(cfg.target.image_size, cfg.observations["image"].crop, cfg.observations["image"].colour,
                             file, k, specs[k].topic) for k in specs if k == "observations.image"}
        conns = [c for c in reader.connections if c.topic in by_topic]
        for conn, logtime, raw in reader.messages(connections=conns):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as exc:
                key = by_topic[conn.topic][0]
                raise DataError(file, f"{key}.topic", f"cannot decode {conn.msgtype} messages on {conn.topic!r} "
                                f"({type(exc).__name__}: {exc}); register the type with source.msg_types") from None
            for key in by_topic[conn.topic]:
                spec = specs[key]
                t[key].append(_stamp(msg, logtime, spec.time or cfg.alignment.time, file, key, conn.topic))
                if key in shapers:
                    decode = decode_bytes if conn.msgtype in COMPRESSED_TYPES else decode_ros_image
                    img = decode(msg.data, file, key, conn.topic) if decode is decode_bytes else decode(
                        msg, file, key, conn.topic)
                    rows[key].append(shapers[key](img))
                    continue
                row = _vector(msg, spec, file, key, conn.topic, len(rows[key]))
                if rows[key] and len(row) != len(rows[key][0]):
                    raise DataError(file, f"{key}.field", f"{conn.topic!r}: {spec.field!r} has {len(row)} values in "
                                    f"message {len(rows[key])}, {len(rows[key][0])} in the first; a stream's width "
                                    "must not change")
                rows[key].append(row)
                if hasattr(msg, "name") and isinstance(msg.name, list):
                    if key not in names:
                        names[key] = list(msg.name)
                    elif names[key] != list(msg.name) and spec.select is not None:
                        raise DataError(file, f"{key}.select", f"{conn.topic!r}: the joint names change at message "
                                        f"{len(rows[key]) - 1} ({names[key]} -> {list(msg.name)})")
        streams = {}
        for key in specs:
            where = specs[key].topic
            if not rows[key]:
                raise DataError(file, f"{key}.topic", f"topic {where!r} has no messages in this bag")
            arr = np.stack(rows[key])
            size = None if key in shapers else arr.shape[1]
            streams[key] = Stream(key, where, np.asarray(t[key], np.int64), arr.__getitem__,
                                  names.get(key) if names.get(key) and len(names[key]) == size else None,
                                  size, image=key in shapers)
    return Unit(file, path.name, streams, table_rate=None)


def _stamp(msg, logtime: int, source: str, file: str, key: str, topic: str) -> int:
    if source == "log":
        return int(logtime)
    header = getattr(msg, "header", None)
    if header is None:
        raise DataError(file, f"{key}.time", f"{topic!r} messages have no header; use time: log")
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _fields(msg) -> list[str]:
    return [k for k in vars(msg) if not k.startswith("_")]


def numeric_fields(msg, prefix: str = "", depth: int = 4) -> list[str]:
    """Dotted names of the fields of ``msg`` that hold numbers (scalars or numeric arrays)."""
    out = []
    for name in _fields(msg):
        value = getattr(msg, name)
        if hasattr(value, "__msgtype__"):
            if depth > 1:
                out += numeric_fields(value, f"{prefix}{name}.", depth - 1)
        elif not (isinstance(value, list) and not value) and np.asarray(value).dtype.kind in "biuf":
            out.append(prefix + name)  # (an empty list's element type is unknown: left out)
    return out


def _what(value) -> str:
    """What a field that does not hold numbers holds, for an error message."""
    if hasattr(value, "__msgtype__"):
        return f"a {value.__msgtype__} message"
    if isinstance(value, str):
        return f"text ({value!r})"
    if isinstance(value, list) and value and hasattr(value[0], "__msgtype__"):
        return f"a list of {value[0].__msgtype__} messages"
    if isinstance(value, list) and value and isinstance(value[0], str):
        return f"strings ({', '.join(map(repr, value[:4]))}{', ...' if len(value) > 4 else ''})"
    return f"{type(value).__name__} values"


def _vector(msg, spec, file: str, key: str, topic: str, i: int) -> np.ndarray:
    parts = []
    for field in [spec.field] if isinstance(spec.field, str) else spec.field:
        try:
            value = _attr(msg, field)
        except AttributeError:
            raise DataError(file, f"{key}.field", f"{topic!r} ({msg.__msgtype__}) has no field {field!r} (fields: "
                            f"{', '.join(_fields(msg))})") from None
        if hasattr(value, "__msgtype__") or np.asarray(value).dtype.kind not in "biuf":
            inside = (f"; its numeric fields: {', '.join(f'{field}.{f}' for f in numeric_fields(value)) or 'none'}"
                      if hasattr(value, "__msgtype__") else "")
            raise DataError(file, f"{key}.field", f"{topic!r} ({msg.__msgtype__}): field {field!r} holds "
                            f"{_what(value)}, not numbers{inside}. The numeric fields of the message: "
                            f"{', '.join(numeric_fields(msg)) or 'none'}")
        parts.append(np.asarray(value, np.float64).ravel())
    return np.concatenate(parts)


def inspect(path: str) -> list[dict]:
    """Every topic of a bag: type, count, rate, jitter and gaps (log time), and a first message's shape."""
    out = []
    reader = _open(Path(path), typestore(None))
    with closing(reader):
        stamps: dict[str, list[int]] = defaultdict(list)
        first: dict[str, object] = {}
        for conn, logtime, raw in reader.messages():
            stamps[conn.topic].append(logtime)
            if conn.topic not in first:
                try:
                    first[conn.topic] = reader.deserialize(raw, conn.msgtype)
                except Exception as exc:
                    first[conn.topic] = f"undecodable: {exc}"
        for topic, info in sorted(reader.topics.items()):
            row = {"stream": topic, "type": info.msgtype, **jitter_stats(np.asarray(stamps.get(topic, []), np.int64))}
            msg = first.get(topic)
            if msg is not None and not isinstance(msg, str):
                row["fields"] = {k: (list(np.shape(v)) if isinstance(v, (list, np.ndarray)) else type(v).__name__)
                                 for k, v in vars(msg).items() if not k.startswith("_")}
                if isinstance(getattr(msg, "name", None), list):
                    row["names"] = list(msg.name)
                if info.msgtype in IMAGE_TYPES:
                    row["shape"] = [int(msg.height), int(msg.width), str(msg.encoding)]
                elif info.msgtype not in COMPRESSED_TYPES:  # the numeric fields an observation or action may use
                    sizes = {f: int(np.asarray(_attr(msg, f)).size) for f in numeric_fields(msg)
                             if not f.startswith(("header.", "layout."))}
                    row["vectors"] = {f: n for f, n in sizes.items() if n > 0}
            out.append(row)
    return out


def write_bag(path: str | Path, messages, storage: str = "mcap", store=None) -> Path:
    """Write ``messages`` (``(log time in ns, topic, message)``, in any order; ``message`` a
    ``rosbags`` message object) to a ROS 2 bag directory at ``path``, sorted by log time, one
    connection per topic (``storage``: ``mcap`` or ``sqlite3``; ``store``: the typestore the
    messages come from, ROS 2 Humble's by default). What the robot stand-in logs, and the tests'
    synthetic robots."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = store or get_typestore(Stores.ROS2_HUMBLE)
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    with Writer(Path(path), version=9, storage_plugin=plugin) as writer:
        conns = {}
        for logtime, topic, msg in sorted(messages, key=lambda m: m[0]):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=store)
            writer.write(conns[topic], int(logtime), store.serialize_cdr(msg, msg.__msgtype__))
    return Path(path)

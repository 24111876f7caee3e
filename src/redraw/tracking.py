"""Writing a stage's metrics: one JSON file per stage that ``dvc metrics show`` reads.

Metric names are hierarchical (``data/transitions``, ``validate/success``) and flat in the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write JSON atomically (temp file + rename): readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def write_metrics(path: str | os.PathLike, metrics: dict[str, Any], prefix: str = "") -> Path:
    return write_json(path, {f"{prefix}{k}": v for k, v in metrics.items()})

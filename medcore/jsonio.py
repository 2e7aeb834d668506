"""One JSON serializer for every artefact, and atomic file writes.

The seed scripts crashed saving metrics because `json` cannot encode numpy scalars; every JSON
file medcore writes goes through `dumps` so that never happens twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["to_jsonable", "dumps", "write_json", "read_json", "atomic_write_bytes", "atomic_write_text"]


def to_jsonable(value: Any) -> Any:
    """Return `value` as plain JSON types: numpy scalars and arrays, paths, dates, dataclasses."""
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        # NaN and infinity are not JSON; null says "no value" without breaking other readers.
        return number if math.isfinite(number) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if hasattr(value, "item") and callable(value.item):  # 0-d tensors and other numpy-likes
        return to_jsonable(value.item())
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any) -> str:
    """Serialise `value` to indented JSON text with a trailing newline."""
    return json.dumps(to_jsonable(value), indent=2, sort_keys=False, allow_nan=False) + "\n"


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` as UTF-8 atomically (see `atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, value: Any) -> Path:
    """Serialise `value` and write it atomically; encoding errors leave no file behind."""
    return atomic_write_text(path, dumps(value))


def read_json(path: Path) -> Any:
    """Read a JSON file written by `write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))

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
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "to_jsonable",
    "dumps",
    "write_json",
    "read_json",
    "atomic_write_bytes",
    "atomic_write_text",
    "file_mode",
    "fsync_dir",
    "fsync_file",
    "check_output_file",
]


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


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads' writes)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc (not Linux): the classic read-and-restore
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain `open(path, "w")` would give a new file: 0666 less the umask (0644 under umask 022)."""
    return 0o666 & ~_umask()


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable: without this a power cut can forget a rename that had returned."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # some file systems cannot open folders; the file's own fsync is then the most there is
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder, fsync it, then rename.

    The file gets the mode the umask allows (mkstemp's 0600 would otherwise survive the rename and
    lock the group out of its reports), and the folder is synced so the rename survives a crash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), file_mode())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def fsync_file(path: Path) -> None:
    """Flush a file another library wrote (e.g. Keras' model.save) to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` as UTF-8 atomically (see `atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, value: Any) -> Path:
    """Serialise `value` and write it atomically; encoding errors leave no file behind."""
    return atomic_write_text(path, dumps(value))


def read_json(path: Path) -> Any:
    """Read a JSON file written by `write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _printable(path: Path) -> str:
    """`path` with control characters escaped: a newline in a name must not break a one-line error."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


def check_output_file(path: Path, header: str, inside: tuple[Path, ...] = ()) -> Path:
    """`path` if it may be written: absent, or a regular file whose first line is `header` (ours from before).

    Anything else is a MedcoreError naming it: a device, FIFO, socket, symlink or folder, a file this
    command did not write, a path inside one of the `inside` folders (the inputs), or a missing folder.
    Checked with lstat, so a symlink is refused rather than followed.
    """
    from medcore.errors import MedcoreError

    path = Path(path)
    shown = _printable(path)
    try:
        os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate: no file can have this name
        raise MedcoreError(f"{shown}: not a file name this system can write") from None
    target = path.parent.resolve() / path.name
    for folder in inside:
        folder = Path(folder).resolve()
        if target == folder or target.is_relative_to(folder):
            raise MedcoreError(f"{shown}: inside the input folder {_printable(folder)}; write the output elsewhere")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise MedcoreError(f"{shown}: the folder {_printable(path.parent)} does not exist") from None
        return path
    except OSError as exc:
        raise MedcoreError(f"{shown}: cannot check the output path: {exc.strerror or exc}") from None
    kind = (
        "a symlink"
        if stat.S_ISLNK(info.st_mode)
        else "a folder"
        if stat.S_ISDIR(info.st_mode)
        else "a device"
        if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
        else "a FIFO"
        if stat.S_ISFIFO(info.st_mode)
        else "a socket"
        if stat.S_ISSOCK(info.st_mode)
        else ""
    )
    if kind:
        raise MedcoreError(f"{shown}: exists and is {kind}; name a new file")
    try:
        with open(path, "rb") as handle:
            first = handle.readline(len(header.encode()) + 2)
    except OSError as exc:
        raise MedcoreError(f"{shown}: exists and cannot be read: {exc.strerror or exc}") from None
    if first.rstrip(b"\r\n") != header.encode():
        raise MedcoreError(f"{shown}: exists and was not written by this command; name a new file or remove it")
    return path

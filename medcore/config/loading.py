"""Loading the YAML config: files that `extends` others, environment overrides, and one-line errors.

Every error names the file and the key path of the first problem, so a typo in `conditions.yaml` is a
message instead of a KeyError deep inside training.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from medcore.config.env import settings
from medcore.config.fields import DEFAULT_CONFIG
from medcore.config.messages import _message
from medcore.config.schema import Config
from medcore.errors import ConfigError

__all__ = ["load_config", "MAX_CONFIG_BYTES"]


_CONFIG = TypeAdapter(Config)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the YAML config at `path` (default: `$MEDCORE_CONFIG` or `conditions.yaml`).

    `MEDCORE_DATA_ROOT`, `MEDCORE_RUNS_ROOT` and `MEDCORE_REGISTRY_ROOT` in the environment override
    `data_root`, `runs_root` and `registry.root`. Raises ConfigError naming the file and key of the
    first problem found.
    """
    env = settings()
    path = Path(path or env.config or DEFAULT_CONFIG).resolve()
    layers = _read_layers(path)
    raw: dict[str, Any] = {}
    for _, layer in reversed(layers):
        raw = _deep_merge(raw, layer)
    try:
        config = _CONFIG.validate_python(raw, context={"base": path.parent})
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        loc = _key_path(error)
        raise ConfigError(
            f"{_origin(loc, layers)}: {'.'.join(map(str, loc)) or '(top level)'}: {_message(error, loc, Config)}"
        ) from None

    def resolved(key: str, override: Path | None) -> Path:
        if override:
            return override.expanduser().resolve()
        # Relative paths are relative to the file that wrote them.
        origin = next((p for p, layer in layers if key in layer), path)
        return (origin.parent / getattr(config, key).expanduser()).resolve()

    if env.registry_root:
        registry_root = env.registry_root.expanduser().resolve()
    else:
        registry_root = (path.parent / (config.registry.root or Path("registry")).expanduser()).resolve()
    config = dataclasses.replace(
        config,
        data_root=resolved("data_root", env.data_root),
        runs_root=resolved("runs_root", env.runs_root),
        registry=dataclasses.replace(config.registry, root=registry_root),
    )
    object.__setattr__(config, "path", path)
    return config


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


MAX_CONFIG_BYTES = 1 * 2**20  # conditions.yaml is under 10 kB: a bigger "config" is a mistake or an attack


def _bounded_text(path: Path) -> str:
    """The UTF-8 text of `path`, only if it is a regular file of at most MAX_CONFIG_BYTES.

    Opened without blocking (a FIFO would wait for a writer forever) and checked on the open file
    (no swap between check and read); never reads more than the limit plus one byte (`/dev/zero`).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{path}: not a regular file (a device, FIFO or socket); name the YAML config file")
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MiB; not a config file")
    return data.decode("utf-8")


def _read_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """`path` and every file it `extends`, nearest first, each as (file, mapping without `extends`)."""
    if path in seen:
        raise ConfigError(f"{path}: extends: circular reference")
    try:
        text = _bounded_text(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; name the YAML config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or type(exc).__name__}") from None
    try:
        raw = yaml.safe_load(text)
    except RecursionError:  # PyYAML parses nesting recursively: `[[[[...` a few thousand deep
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    parent = raw.pop("extends", None)
    if parent is None:
        return [(path, raw)]
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: must be the path of another config file, got {parent!r}")
    return [(path, raw), *_read_layers((path.parent / parent).resolve(), seen + (path,))]


def _key_path(error: Mapping[str, Any]) -> tuple[Any, ...]:
    """The YAML key path of a pydantic error: pydantic's own markers dropped, a cross-field key appended."""
    loc = tuple(part for part in error["loc"] if part != "[key]")
    if error["type"] == "medcore_key":
        loc += tuple(str(error["ctx"]["key"]).split("."))
    return loc


def _origin(loc: tuple[Any, ...], layers: list[tuple[Path, dict[str, Any]]]) -> Path:
    """The file that wrote the deepest part of `loc` (the nearest file wins, as in the merge)."""
    for depth in range(len(loc), 0, -1):
        for path, layer in layers:
            node: Any = layer
            for part in loc[:depth]:
                node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
            if node is not _MISSING:
                return path
    return layers[0][0]


_MISSING = object()

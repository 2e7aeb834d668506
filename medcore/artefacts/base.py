"""What every artefact shares: a schema version, extra keys kept, and a loader whose errors are one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from medcore.errors import MedcoreError

__all__ = ["SCHEMA_VERSION", "ArtefactError", "Artefact", "Open", "load_artefact", "first_problem"]

SCHEMA_VERSION = 1  # every artefact below is at version 1: the files as they were when versions began


class ArtefactError(MedcoreError):
    """An artefact that cannot be read: not JSON, from a newer medcore, or a field of the wrong kind."""


class Open(BaseModel):
    """A part of an artefact: named fields typed, any other key kept as it is."""

    model_config = ConfigDict(extra="allow")


class Artefact(Open):
    """A whole file. `FILE` is its usual name; `schema_version` 1 when the file has none (written before versions)."""

    FILE: ClassVar[str] = ""
    schema_version: int = SCHEMA_VERSION


A = TypeVar("A", bound=Artefact)


def first_problem(error: ValidationError) -> str:
    """The first bad field of a validation error, in one line: `selection.roc_auc: input should be a valid number`."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(the whole file)"
    text = " ".join(first["msg"].split())
    return f"{where}: {text[:1].lower()}{text[1:]}"


def _parse(model: type[A], data: Any, path: Path) -> A:
    """`data` (a file's JSON) as `model`, or an ArtefactError naming `path` and the first bad field."""
    if not isinstance(data, dict):
        raise ArtefactError(f"{path}: not a {model.FILE or model.__name__} (a JSON object expected)")
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise ArtefactError(
            f"{path}: schema_version {version} is newer than this medcore reads ({SCHEMA_VERSION}); update medcore"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ArtefactError(f"{path}: {first_problem(exc)}") from None


def load_artefact(model: type[A], path: str | Path) -> A:
    """The JSON file at `path` as `model`; why it cannot be (missing, not JSON, newer, a bad field) in one line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtefactError(f"{path}: missing") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ArtefactError(f"{path}: not valid JSON: {' '.join(str(exc).split())[:120]}") from None
    return _parse(model, data, path)

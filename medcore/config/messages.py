"""One-line config errors: what is wrong with a key, in words a config author can act on.

`_message` turns one pydantic error into the text after `<file>: <key path>: `; the settings class that
declares the key (for its bounds and allowed keys) is found by walking the key path down from `root`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any

__all__: list[str] = []


def _declared(loc: tuple[Any, ...], root: type) -> tuple[Any, Any]:
    """(the settings class that declares the last key of `loc`, that key's FieldInfo); None where not declared."""
    kind: Any = root
    owner, info = None, None
    for part in loc:
        if hasattr(kind, "__pydantic_fields__"):
            owner, info = kind, kind.__pydantic_fields__.get(part)
            if info is None:
                return owner, None
            kind = _unwrap(info.annotation)
        elif typing.get_origin(kind) in (dict, Mapping):
            owner, info, kind = None, None, _unwrap(typing.get_args(kind)[1])  # a user's key: conditions.<name>
        else:
            return None, None
    return owner, info


def _unwrap(annotation: Any) -> Any:
    """`X` from `X | None`, `X | None` and `Annotated[X, ...]`."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _yaml_keys(cls: Any) -> list[str]:
    """The keys a settings class accepts in YAML (not the names filled in from the mapping's keys, nor `path`)."""
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name != "name"]


def _bounds(info: Any) -> str:
    low = next((m.ge for m in getattr(info, "metadata", ()) if hasattr(m, "ge")), None)
    high = next((m.le for m in getattr(info, "metadata", ()) if hasattr(m, "le")), None)
    if low is not None and high is not None:
        return f" between {low} and {high}"
    if low is not None:
        return f" >= {low}"
    return f" <= {high}" if high is not None else ""


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()  # as YAML writes it
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _message(error: Mapping[str, Any], loc: tuple[Any, ...], root: type) -> str:  # noqa: C901 one flat case per pydantic error type
    """What is wrong with `loc` below `root` (the Config class), in words a config author can act on.

    pydantic's own words are the last resort.
    """
    kind, got, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    owner, info = _declared(loc, root)
    if kind == "medcore_key":
        return str(ctx["message"])
    expected = str(ctx.get("expected", "?")).replace("'", "").replace(" or ", ", ")
    if "[key]" in error["loc"]:
        return f"unknown key (allowed: {expected})" if kind == "literal_error" else f"key must be text, got {got!r}"
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        allowed = f" (allowed: {', '.join(_yaml_keys(owner))})" if owner is not None else ""
        return f"unknown key{allowed}"
    if kind in ("missing", "missing_argument"):
        return "is required"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer{_bounds(info)}, got {_shown(got)}"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return f"must be a finite number{_bounds(info)}, got {_shown(got)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"must be{_bounds(info) or ' ' + error['msg'].removeprefix('Input should be ')}, got {got}"
    if kind == "bool_type":
        return f"must be true or false, got {_shown(got)}"
    if kind == "string_type":
        return f"must be text, got {_shown(got)}"
    if kind == "literal_error":
        return f"must be one of {expected}, got {_shown(got)}"
    if kind in ("dict_type", "dataclass_type", "model_type", "mapping_type"):
        return f"must be a mapping of keys, got {_shown(got)}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list, got {_shown(got)}"
    if kind in ("path_type",):
        return f"must be a path, got {_shown(got)}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    return " ".join(str(error["msg"]).split()).lower()

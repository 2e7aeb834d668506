"""The one Jinja2 environment of the templates in `templates/` (the status report, the model card)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medcore.config import settings

__all__ = ["TEMPLATES_DIR", "environment"]

TEMPLATES_DIR = settings().templates or Path(__file__).resolve().parents[2] / "templates"


def environment(**options: Any) -> Any:
    """A Jinja2 environment over TEMPLATES_DIR: undefined names fail; `options` are Jinja2's (e.g. autoescape)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), undefined=jinja2.StrictUndefined, **options
    )

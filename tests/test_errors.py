"""One-line errors: what every stage record, log line and e-mail failure shows."""

from __future__ import annotations

from medcore.errors import ConfigError, one_line


def test_one_line_keeps_medcore_messages_and_names_other_types():
    """medcore's own message is shown as written; any other exception is prefixed by its type; all on one line."""
    assert one_line(ConfigError("a.yaml: seed: must be an integer")) == "a.yaml: seed: must be an integer"
    assert one_line(OSError("disk\n  full")) == "OSError: disk full"
    assert one_line(KeyError()) == "KeyError: (no message)"

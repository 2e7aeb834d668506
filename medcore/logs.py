"""The one logging setup of medcore's command line: one handler on the root logger, one line per record.

Library modules only call `logging.getLogger(__name__)`; under Airflow the task runner owns logging
and this is never called. TensorFlow attaches a handler of its own to the `tensorflow` logger when
it is imported before the root logger has one, and that logger also propagates to the root: every
TensorFlow record would then print twice. `setup_logging` removes that handler, so each record is
printed once, by the root handler, whatever was imported first; calling it again changes nothing.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["setup_logging", "FORMAT"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_MARK = "_medcore_handler"


def setup_logging(level: int = logging.INFO) -> logging.Handler:
    """Send every record to stderr once, in FORMAT; return the handler (the same one on a second call)."""
    root = logging.getLogger()
    ours = next((h for h in root.handlers if getattr(h, _MARK, False)), None)
    if ours is None:
        ours = logging.StreamHandler(sys.stderr)
        ours.setFormatter(logging.Formatter(FORMAT))
        setattr(ours, _MARK, True)
        for other in list(root.handlers):  # e.g. a basicConfig made by an imported library
            root.removeHandler(other)
        root.addHandler(ours)
    root.setLevel(level)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and logger.propagate:
            for handler in list(logger.handlers):
                if not isinstance(handler, logging.NullHandler):
                    logger.removeHandler(handler)  # it would print what the root handler prints as well
    return ours

"""One logging setup: each record is printed once, whatever was imported first."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from medcore.logs import FORMAT


def test_each_record_prints_once_even_after_a_library_added_its_own_handler():
    """A logger with its own handler (as TensorFlow's gets when imported first) no longer prints a second copy."""
    code = textwrap.dedent("""
        import logging, sys
        library = logging.getLogger("tensorflow")   # what TensorFlow does on import when the root has no handler
        library.addHandler(logging.StreamHandler(sys.stderr))
        from medcore.logs import setup_logging
        setup_logging()
        setup_logging()                               # a second call changes nothing
        library.warning("from the library")
        logging.getLogger("medcore.pipeline").info("from medcore")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert sum("from the library" in line for line in lines) == 1, lines
    assert sum("from medcore" in line for line in lines) == 1, lines
    assert any(line.endswith("INFO medcore.pipeline: from medcore") for line in lines), (lines, FORMAT)


def test_the_old_setup_printed_the_library_record_twice():
    """The reason for the test above: basicConfig leaves a library's own handler in place, so its record doubles."""
    code = textwrap.dedent("""
        import logging, sys
        logging.getLogger("tensorflow").addHandler(logging.StreamHandler(sys.stderr))
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("tensorflow").warning("from the library")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert sum("from the library" in line for line in done.stderr.splitlines()) == 2

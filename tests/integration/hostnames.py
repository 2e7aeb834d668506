"""The host name each integration worker reports, standing in for a machine of its own.

Airflow records `hostname_callable()` on every task instance it runs; both test workers run on this
machine, so each is given its own name through MEDCORE_IT_HOSTNAME.
"""

from __future__ import annotations

import os


def worker_hostname() -> str:
    """The name the worker was started with (MEDCORE_IT_HOSTNAME), else this machine's."""
    import socket

    return os.environ.get("MEDCORE_IT_HOSTNAME") or socket.getfqdn()

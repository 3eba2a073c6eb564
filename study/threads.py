"""The threads this package starts: named with one prefix, each stopped by its owner's close.

The test suite compares the threads with this prefix alive before and after every test
(``tests/conftest.py``), so one that outlives its owner (a spool retrying a dead server through
later work, a writer waiting forever) fails the test that left it.
"""

from __future__ import annotations

import threading

THREAD_PREFIX = "stn-study:"


def start_thread(target, name: str) -> threading.Thread:
    """A daemon thread named ``stn-study:<name>``, started (daemon: a crash of its owner never hangs exit)."""
    thread = threading.Thread(target=target, name=f"{THREAD_PREFIX}{name}", daemon=True)
    thread.start()
    return thread


def ours() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)}

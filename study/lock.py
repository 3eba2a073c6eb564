"""One driver per study: a file lock in the study's directory.

Two drivers on one study would restore the same Tune run twice, write the same ``study.json`` and
searcher state, and end each other's MLflow runs. The lock is an OS lock (``flock`` through
``filelock``): the kernel drops it when its holder dies, so a driver killed with SIGKILL leaves no
stale lock behind and the next driver simply takes it. A sidecar file names the holder (host, pid,
start time) so that a refused driver can say who is running the study.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_FILE, HOLDER_FILE = "driver.lock", "driver.json"


class StudyLocked(RuntimeError):
    """Another live driver holds the study; the message is one line naming it."""


def holder(directory: Path) -> dict:
    """Who holds the lock, as its sidecar says; waits a moment for a holder that is just writing it."""
    for _ in range(10):
        try:
            return json.loads((directory / HOLDER_FILE).read_text())
        except (OSError, ValueError):
            time.sleep(0.1)
    return {}


def _write_holder(directory: Path) -> None:
    info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp = directory / (HOLDER_FILE + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(directory / HOLDER_FILE)  # atomic: a refused driver never reads half a file


@contextmanager
def driver_lock(directory: Path, study_id: str):
    """Hold the study for this process, or raise ``StudyLocked`` at once if a live driver has it."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        info = holder(directory)
        raise StudyLocked(f"study {study_id} is being run by another driver: host {info.get('host', 'unknown')}, "
                          f"pid {info.get('pid', 'unknown')}, since {info.get('started', 'unknown')}; "
                          f"wait for it to end or stop it first") from None
    try:
        _write_holder(directory)  # over a killed holder's sidecar: the lock is ours now
        yield
    finally:
        (directory / HOLDER_FILE).unlink(missing_ok=True)  # before the release: no one reads a gone holder
        lock.release()

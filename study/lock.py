"""One driver per study: a file lock in the study's directory, or on S3 a lease object.

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
import sys
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


# ---------------------------------------------------------------------------------------------- S3
LEASE_FILE = "driver.lease"
LEASE_TTL_S = 90.0  # a lease not renewed for this long is a dead driver's (renewed every TTL / 6)


def _alive_here(info: dict) -> bool:
    """Whether the holder is a live process of this machine (False: another machine, or dead)."""
    if info.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(info.get("pid", -1)), 0)
        return True
    except (OSError, ValueError):
        return False


def _lease_body(token: str, started: str) -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": started, "token": token,
                       "renewed": time.time()}).encode()


def _take(directory, study_id: str, token: str, started: str) -> str:
    """Create the lease, or take over a dead driver's; the lease's ETag, or ``StudyLocked``."""
    if directory.create_if_absent(LEASE_FILE, _lease_body(token, started)):
        return directory.read_versioned(LEASE_FILE)[1]
    held = directory.read_versioned(LEASE_FILE)
    if held is None:  # released in between: try once more from the start
        return _take(directory, study_id, token, started)
    body, etag = held
    try:
        info = json.loads(body)
    except ValueError:
        info = {}
    age = time.time() - float(info.get("renewed", 0))
    same_host = info.get("host") == socket.gethostname()
    if (same_host and not _alive_here(info)) or age > LEASE_TTL_S:
        new = directory.replace_if(LEASE_FILE, _lease_body(token, started), etag)
        if new is not None:
            return new
        info, age = {"host": "another driver", "pid": "unknown", "started": "just now"}, 0.0  # it won the take-over
    raise StudyLocked(f"study {study_id} is being run by another driver: host {info.get('host', 'unknown')}, "
                      f"pid {info.get('pid', 'unknown')}, since {info.get('started', 'unknown')} (lease renewed "
                      f"{age:.0f} s ago; a driver that stops renewing it is taken over after {LEASE_TTL_S:g} s); "
                      f"wait for it to end or stop it first")


@contextmanager
def s3_lease(directory, study_id: str):
    """One driver per study on S3, across working directories and machines: a lease object in the study's
    prefix, created with a conditional write, renewed while the driver lives (``If-Match`` on its own
    version, so a renewal never overwrites a driver that took over), taken over when stale or when its
    holder is a dead process of this machine (a SIGKILLed driver resumed here at once).

    The journal's segments fence the record on their own (``study.search.segments``): a driver that
    lost its lease cannot overwrite what another wrote.
    """
    import threading
    import uuid

    from study.threads import start_thread

    token, started = uuid.uuid4().hex, time.strftime("%Y-%m-%d %H:%M:%S")
    etag = _take(directory, study_id, token, started)
    done = threading.Event()

    def renew():
        nonlocal etag
        while not done.wait(LEASE_TTL_S / 6):
            new = directory.replace_if(LEASE_FILE, _lease_body(token, started), etag)
            if new is None:
                print(f"study {study_id}: another driver took over this study's lease; this driver's further "
                      f"writes to its record will be refused", file=sys.stderr, flush=True)
                return
            etag = new

    thread = start_thread(renew, "study-lease")
    try:
        yield
    finally:
        done.set()
        thread.join()  # at most one conditional PUT in flight
        held = directory.read_versioned(LEASE_FILE)
        if held is not None and json.loads(held[0]).get("token") == token:
            directory.delete(LEASE_FILE)


def study_lock(directory, study_id: str, fallback: Path):
    """The one-driver guard for a study directory: an OS lock in it (local or shared folder), the S3 lease,
    or on other object stores a lock in ``fallback`` (this machine's folder of the study: it guards
    against a second driver on this machine only)."""
    if directory.local is not None:
        return driver_lock(directory.local, study_id)
    if directory.uri.startswith("s3://"):
        return s3_lease(directory, study_id)
    return driver_lock(fallback, study_id)

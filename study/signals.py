"""SIGTERM and SIGHUP stop a study the way Ctrl-C does.

``docker stop``, Kubernetes, systemd and ``timeout`` send SIGTERM, a closed terminal SIGHUP. Left to
Python and Ray (whose ``ray.init`` installs a SIGTERM handler that exits at once), the driver would die
mid-run with its MLflow runs RUNNING. Here both are handed to whatever handles SIGINT at that moment —
Tune's graceful stop during a Tune run, ``KeyboardInterrupt`` elsewhere — so the study ends
``interrupted`` and resumable, and the exit status still says which signal came (128 + its number).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class StopSignals:
    """The driver's SIGTERM/SIGHUP handler; ``install`` again after ``ray.init``, which replaces it."""

    def __init__(self):
        self.received: int | None = None
        self.previous: dict[int, object] = {}  # what was there before us: put back by ``restore``

    @property
    def active(self) -> bool:
        return bool(self.previous)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python only lets the main thread set handlers; a study run from a thread keeps the defaults
        for sig in STOP_SIGNALS:
            current = signal.getsignal(sig)
            if current == self._handle:
                continue
            if current == signal.SIG_IGN and sig not in self.previous:
                continue  # e.g. SIGHUP under nohup: whoever started us wants the study to survive it
            self.previous[sig] = current  # the first install's, or Ray's after ray.init: restored as found
            signal.signal(sig, self._handle)

    @contextmanager
    def around_ray_init(self):
        """Hold SIGTERM/SIGHUP while ``ray.init`` runs, then take them back from Ray.

        A signal that comes meanwhile waits for our handler instead of meeting Ray's. The processes of a
        local Ray instance inherit the blocked mask (as Ray itself blocks SIGINT in them), so a SIGTERM sent
        to the whole process group (``timeout``, systemd) leaves them running for the driver's graceful stop.
        """
        if not self.active:
            yield
            return
        import ray

        starting = not ray.is_initialized()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            yield
            self.install()
            if starting and ray.is_initialized():
                atexit.register(stop_ray_quickly)  # runs before Ray's own exit handlers (last in, first out)
        except SystemExit:  # Ray's handler ran all the same: the signal reached a thread that was not holding it
            self.received = self.received or signal.SIGTERM
            raise KeyboardInterrupt from None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self.previous.clear()

    def exit_code(self, default: int = 130) -> int:
        return 128 + self.received if self.received else default

    def _handle(self, signum, frame) -> None:
        self.received = self.received or signum
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)  # Tune's: stop the run and save its state; else Python's: KeyboardInterrupt
        else:
            raise KeyboardInterrupt


STOP = StopSignals()


def stop_ray_quickly() -> None:
    """At exit, end the Ray instance started under ``around_ray_init`` without Ray's 1 s wait per process.

    Its processes hold SIGTERM, so Ray's SIGTERM-then-wait-1-s would only add seconds to a stop that a
    container runtime times: once the driver has disconnected they get the SIGKILL Ray sends after that
    wait, and so do the raylet's agents, which would otherwise linger a minute waiting for the gone GCS.
    """
    import ray

    if not ray.is_initialized():
        return
    node = getattr(ray._private.worker, "_global_node", None)  # None when connected to a cluster: nothing to kill
    helpers = []
    if node is not None and callable(getattr(node, "kill_all_processes", None)):
        kill = node.kill_all_processes
        node.kill_all_processes = lambda check_alive=False, allow_graceful=False, wait=False: kill(
            check_alive=check_alive, allow_graceful=False, wait=wait)
        helpers = children_of([info.process.pid for info in getattr(node, "all_processes", {}).get("raylet", [])])
    ray.shutdown()
    for pid in helpers:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass  # already gone


def children_of(parents: list[int]) -> list[int]:
    """Child process ids, from /proc (Linux; elsewhere none)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid in parents:
            children.append(int(stat.parent.name))
    return children


def fit(tuner):
    """``tuner.fit()``, then SIGINT's handler from before, and stop if SIGTERM/SIGHUP came meanwhile.

    Tune leaves its handler in place after a run, where a Ctrl-C or a SIGTERM between runs would only set
    a flag that no one reads any more; and a signal in the last moments of a run must not be lost either.
    """
    before = signal.getsignal(signal.SIGINT)
    try:
        return tuner.fit()
    finally:
        if threading.current_thread() is threading.main_thread() and before is not None:
            signal.signal(signal.SIGINT, before)
        if STOP.received:
            raise KeyboardInterrupt


@contextmanager
def graceful_stop():
    """SIGTERM/SIGHUP behave like Ctrl-C inside; the earlier handlers are back afterwards."""
    STOP.received = None
    STOP.install()
    try:
        yield STOP
    finally:
        STOP.restore()

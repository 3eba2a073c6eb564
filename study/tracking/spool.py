"""Tracking off the hot path, and nothing lost while the tracking server is down.

Every MLflow update of a study goes through a ``TrackingSpool``: it is appended to a journal on the
driver's disk, then applied in order by one background thread. Tune's event loop never waits for
the network. When the server is unreachable the thread keeps the updates in the journal and
retries with back-off; when it answers again they are replayed in order. A driver that exits while
the server is still down leaves the journal behind, and the next ``--resume`` of the study replays
it before anything else. Updates are idempotent where a replay could repeat them: a trial's run is
found by its ``trial_key`` tag (``study.trial_schema.trial_key``) before one is created, and an epoch already logged is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from study.threads import start_thread
from study.tracking.contract import MODEL_FILE, SPEC_FILE, Tag, study_runs

log = logging.getLogger(__name__)
# The driver's MLflow requests fail fast; the spool retries them for as long as the server is down.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
JOURNAL, APPLIED = "journal.jsonl", "applied"
# MLflow's own retries (7, backoff up to minutes) would hold the spool's thread long past its close;
# the spool retries on its own and keeps every update in its journal meanwhile.
REQUEST_TIMEOUT_S = 30
BOUNDED_REQUESTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT_S)}
PERMANENT_ATTEMPTS = 3  # a request the reachable server keeps refusing is dropped, with a warning


def is_refusal(err: Exception) -> bool:
    """A request the store answered and rejected (retrying cannot help), as opposed to an outage.

    Classified by the error itself, not by ``/health`` (which answers while the database behind the
    server is down): an MLflow 4xx other than 408/429 is a refusal; 5xx, timeouts and connection
    errors are outages; any other error counts as a refusal so a bad update cannot block the queue.
    """
    if isinstance(err, MlflowException):
        status = err.get_http_status_code()
        return 400 <= status < 500 and status not in (408, 429)
    return not isinstance(err, (OSError, TimeoutError))


class TrackingSpool:
    """Ordered, durable, asynchronous MLflow updates (see the module docstring)."""

    def __init__(self, tracking_uri: str, directory: Path, experiment_id: str, study_id: str,
                 say: Callable[[str], None] = print):
        self.uri, self.directory = tracking_uri, Path(directory)
        self.experiment_id, self.study_id, self.say = experiment_id, study_id, say
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, value in BOUNDED_REQUESTS.items():  # read by MLflow at each request (a user's setting stays)
            os.environ.setdefault(name, value)
        self.client = MlflowClient(tracking_uri)
        self.runs: dict[str, str] = {}  # trial key -> run id
        self.last_step: dict[str, int] = {}  # run id -> last epoch logged
        self.outage_since: float | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._seq = self._applied = self._read_applied()
        self._end_journal_line()
        for op in self._journal_after(self._applied):  # left by a driver that stopped during an outage
            self._seq = op["seq"]
            self._enqueue(op)
        if self._pending:
            self.say(f"tracking: replaying {self._pending} updates kept in {self.journal}")
        self._thread = start_thread(self._work, "tracking-spool")

    @property
    def journal(self) -> Path:
        return self.directory / JOURNAL

    # ------------------------------------------------------------------ producer side (Tune's loop)
    def submit(self, kind: str, **fields) -> None:
        with self._lock:
            self._seq += 1
            op = {"seq": self._seq, "op": kind, **fields}
            with self.journal.open("a") as f:
                f.write(json.dumps(op) + "\n")
            self._enqueue(op)

    def keep_files(self, files: list[Path], key: str) -> Path:
        """Copy files into the spool now (checkpoints may be deleted before the server is back)."""
        target = self.directory / "files" / f"{key}-{time.time_ns()}"
        target.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copy2(path, target / path.name)
        return target

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every update is applied (or ``timeout`` s pass); returns how many are still pending."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending and self._thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._idle.wait(timeout=1.0 if left is None else min(left, 1.0))
            return self._pending

    # ------------------------------------------------------------------ consumer side (one thread)
    def _enqueue(self, op: dict) -> None:
        self._pending += 1
        self._queue.put(op)

    def close(self) -> None:
        """Stop applying (what is left stays in the journal for the next spool on this directory).

        The thread ends at once between attempts; an update in flight ends within one request's
        timeout (``REQUEST_TIMEOUT_S``: MLflow's own retries are off in a spool's process, its retries
        are the spool's), and close waits for that.
        """
        self._closed.set()
        self._queue.put(None)
        self._thread.join()

    def _work(self) -> None:
        while True:
            op = self._queue.get()
            if op is None or self._closed.is_set() or not self._apply_with_retries(op):
                return
            with self._idle:
                self._applied = op["seq"]
                try:
                    tmp = self.directory / (APPLIED + ".tmp")
                    tmp.write_text(str(self._applied))
                    tmp.replace(self.directory / APPLIED)
                    if self._pending == 1:
                        self._compact()
                except OSError as err:  # e.g. a full disk: the journal is longer, nothing is lost
                    log.warning("tracking: cannot record progress in %s: %s", self.directory, err)
                self._pending -= 1
                if not self._pending:
                    self._idle.notify_all()

    def _apply_with_retries(self, op: dict) -> bool:
        """Apply one update, retrying through outages; False when closed before it was applied."""
        refused, delay = 0, 0.5
        while not self._closed.is_set():
            try:
                self._apply(op)
                if self.outage_since is not None:
                    self.say(f"tracking: server {self.uri} is back after {time.time() - self.outage_since:.0f} s; "
                             f"replaying the spooled updates")
                    self.outage_since = None
                return True
            except Exception as err:  # noqa: BLE001 - classified below; never kills the thread
                if is_refusal(err):
                    refused += 1
                    if refused >= PERMANENT_ATTEMPTS:
                        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
                        log.warning("tracking: dropped %s update for %s: %s", op["op"], op.get("key"), reason)
                        return True
                elif self.outage_since is None:
                    self.outage_since = time.time()
                    self.say(f"tracking: server {self.uri} unreachable; training goes on and updates are "
                             f"kept in {self.journal} until it is back")
                self._closed.wait(delay)
                delay = min(delay * 2, 5.0)
        return False

    def _compact(self) -> None:
        """Everything applied: start an empty journal (called with the lock held)."""
        self.journal.unlink(missing_ok=True)

    def _end_journal_line(self) -> None:
        """A driver killed mid-write leaves a partial last line: end it so the next update starts clean."""
        try:
            with self.journal.open("rb") as f:
                f.seek(-1, 2)
                cut = f.read(1) != b"\n"
            if cut:
                with self.journal.open("a") as f:
                    f.write("\n")
        except OSError:  # no journal yet
            pass

    def _read_applied(self) -> int:
        try:
            return int((self.directory / APPLIED).read_text())
        except (OSError, ValueError):
            return 0

    def _journal_after(self, seq: int) -> list[dict]:
        if not self.journal.exists():
            return []
        ops = []
        for line in self.journal.read_text().splitlines():
            try:
                op = json.loads(line)
            except ValueError:  # a line cut short by a crash while writing it
                continue
            if op["seq"] > seq:
                ops.append(op)
        return ops

    # ------------------------------------------------------------------ the updates
    def _run_id(self, op: dict) -> str | None:
        if op.get("run_id"):
            return op["run_id"]
        key = op["key"]
        if key not in self.runs:
            found = self._find(key)
            if found is None:
                return None
            self._attach(key, found)
        return self.runs[key]

    def _find(self, key: str) -> str | None:
        # every run the tracker opens carries its key as a tag (a study's trial key, or Tune's id outside a study)
        runs = self.client.search_runs([self.experiment_id], f"tags.{Tag.TRIAL_KEY} = '{key}' and "
                                       f"{study_runs(self.study_id)}", max_results=1)
        return runs[0].info.run_id if runs else None

    def _attach(self, key: str, run_id: str) -> None:
        self.runs[key] = run_id
        history = self.client.get_metric_history(run_id, "val_error")
        self.last_step[run_id] = max((m.step for m in history), default=0)

    def _apply(self, op: dict) -> None:
        kind = op["op"]
        if kind == "open":
            existing = self._find(op["key"])
            if existing:  # a resumed trial keeps its run (params again: the first try may have stopped before them)
                self._attach(op["key"], existing)
                self.client.update_run(existing, status="RUNNING")
                self.client.log_batch(existing, params=[Param(k, v) for k, v in op["params"].items()])
                return
            run = self.client.create_run(self.experiment_id, run_name=op["run_name"], tags=op["tags"])
            self.runs[op["key"]], self.last_step[run.info.run_id] = run.info.run_id, 0
            self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in op["params"].items()])
            return
        run_id = self._run_id(op)
        if run_id is None:
            log.warning("tracking: no run for %s; %s update dropped", op.get("key"), kind)
            return
        if kind == "metrics":
            epoch = op.get("epoch")
            if epoch is not None:
                if epoch <= self.last_step.get(run_id, 0):
                    return  # logged before an interruption: one point per epoch
            self.client.log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v, ts, step in op["metrics"]])
            if epoch is not None:
                self.last_step[run_id] = epoch
        elif kind == "tags":
            for k, v in op["tags"].items():
                self.client.set_tag(run_id, k, v)
        elif kind == "end":
            if op.get("only_if_running") and self.client.get_run(run_id).info.status != "RUNNING":
                return
            for k, v in op.get("tags", {}).items():  # a tag the store refuses must not keep the run RUNNING
                try:
                    self.client.set_tag(run_id, k, v)
                except Exception as err:
                    if not is_refusal(err):
                        raise
                    log.warning("tracking: tag %s of run %s refused (%s); the run is ended without it", k, run_id,
                                (str(err).strip().splitlines() or [type(err).__name__])[0][:300])
            self.client.set_terminated(run_id, op["status"])
        elif kind == "files":
            if not Path(op["dir"]).is_dir():
                return  # applied just before a crash
            for path in sorted(Path(op["dir"]).iterdir()):
                if path.name not in (MODEL_FILE, SPEC_FILE):
                    self.client.log_artifact(run_id, str(path), op.get("artifact_path"))
            if (Path(op["dir"]) / MODEL_FILE).exists():
                from study.tracking.trial_runs import log_final_model

                log_final_model(self.uri, run_id, Path(op["dir"]))
            shutil.rmtree(op["dir"], ignore_errors=True)
        else:
            raise ValueError(f"unknown tracking update {kind!r}")

"""Optuna's journal on S3 as numbered segment objects: each append writes only itself, and never over another's.

An object store cannot append. Rewriting the whole journal at every append costs O(journal) per
trial-epoch (quadratic over a study: ~250 GB uploaded for the ``paper`` preset's ~10 MB journal), and
two drivers each rewriting it from their own copy lose each other's updates. Here:

- the lines appended since the last write are one new object ``optuna.journal.d/seg-<first line
  number>``, written behind the driver's loop by one thread and created with S3's conditional write
  (``If-None-Match: *``). Two writers can never both write line N: the loser's
  create fails and it stops with ``RecordConflict`` instead of overwriting — a fence under any lease;
- a reader reads ``base-<N>`` (the journal's first N lines, the newest base) and lists and
  concatenates only the segments from line N on (S3 lists from a key on);
- the writer compacts — writes a new base — when the segments since the last base hold as many
  bytes as the base itself. The compactions' bytes are a geometric series
  (≤ 2× the final journal), so a whole study writes ≤ 3× the bytes it ends up holding, and each
  segment's PUT is the size of what it adds.

Optuna's maintainers declined an S3 journal backend in Optuna itself (optuna#6002 / PR #6003: S3 could
not then be tested with conditional writes); S3 has had them since 2024 and moto's server serves them.
"""

from __future__ import annotations

import atexit
import json
import re
import threading
from typing import Any, Iterable

from optuna.storages.journal import BaseJournalBackend

from study.paths import StudyDir
from study.threads import start_thread

_NAME = re.compile(r"^(base|seg)-(\d{12})$")
_BATCH_LINES = 1_000  # at most this many lines per segment (~200 kB): a PUT stays small however far behind


class RecordConflict(RuntimeError):
    """Another driver wrote this study's record; the message is one line."""


def _name(kind: str, number: int) -> str:
    return f"{kind}-{number:012d}"


class SegmentedJournalBackend(BaseJournalBackend):
    """Optuna's journal under ``<study>/<name>.d/`` on S3 (see the module's docstring).

    ``writer``: this process is the study's driver. It reads the record once, then serves reads from
    memory and appends segments; a reader (``--list``, ``optuna.load_study``) reads as of its opening.
    """

    def __init__(self, directory: StudyDir, name: str, writer: bool = False):
        self.directory, self.folder, self.writer = directory, f"{name}.d", writer
        self._lines: list[bytes] = []
        self._base_bytes, self._tail_bytes, self._tail_segments = 0, 0, 0
        self._old_bases: list[str] = []  # bases a newer one supersedes (segments are never deleted: see _compact)
        self._load()
        self._written = len(self._lines)  # lines in the bucket; the rest are queued for the writer thread
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._failure: RecordConflict | None = None
        if writer and self._tail_bytes > self._base_bytes:
            self._compact()

    # ---------------------------------------------------------------- reading
    def _load(self) -> None:
        bases = sorted(int(m.group(2)) for m in map(_NAME.match, self.directory.list_after(self.folder, "base-")) if m)
        base = bases[-1] if bases else 0
        self._old_bases = [f"{self.folder}/{_name('base', n)}" for n in bases[:-1]]
        if bases:
            self._lines = self._split(self.directory.read_bytes(f"{self.folder}/{_name('base', base)}"))
            if len(self._lines) != base:
                raise RecordConflict(f"record: {self.directory}/{self.folder}/{_name('base', base)} holds "
                                     f"{len(self._lines)} lines, its name says {base}: the record is damaged")
            self._base_bytes = sum(map(len, self._lines))
        after = _name("seg", base - 1) if base else ""
        segments = sorted(int(m.group(2)) for m in map(_NAME.match, self.directory.list_after(self.folder, "seg-", after))
                          if m)
        for first in segments:
            if first != len(self._lines):  # cannot happen while segments are only ever created once
                raise RecordConflict(f"record: {self.directory}/{self.folder} has no segment at line "
                                     f"{len(self._lines)} but one at {first}: the record is damaged")
            chunk = self._split(self.directory.read_bytes(f"{self.folder}/{_name('seg', first)}"))
            self._lines += chunk
            self._tail_bytes += sum(map(len, chunk))
        self._tail_segments = len(segments)

    @staticmethod
    def _split(data: bytes) -> list[bytes]:
        return [line for line in data.splitlines(keepends=True) if line.endswith(b"\n")]

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return [json.loads(line) for line in self._lines[log_number_from:]]

    # ---------------------------------------------------------------- writing
    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Queue the lines: the driver's reads see them at once, one thread writes them behind its loop.

        A PUT takes ~10 ms on loopback and tens of ms on S3; written in the driver's loop, two per
        result bounded the whole study's pace. The writer thread puts everything queued meanwhile into
        one segment. ``flush`` waits for it: the searcher flushes before Tune saves its own state and
        when a trial ends, so a killed driver can lose at most the last epochs' values of running trials,
        never a trial Tune knows or an ending (``docs/operations.md``).
        """
        if not self.writer:
            raise RecordConflict(f"record: {self.directory} was opened to read; only its driver appends")
        lines = [(json.dumps(log, separators=(",", ":")) + "\n").encode() for log in logs]
        with self._changed:
            self._raise_failure()
            self._lines += lines
            self._changed.notify_all()
            if self._thread is None:
                self._closing = False
                self._thread = start_thread(self._write_behind, "optuna-record-writer")
                atexit.register(self.flush, raise_failure=False)

    def flush(self, raise_failure: bool = True) -> None:
        """Wait until every queued line is in a segment (or the writer failed: then raise its error)."""
        with self._changed:
            while self._written < len(self._lines) and self._failure is None:
                self._changed.wait()
            if raise_failure:
                self._raise_failure()

    def close(self) -> None:
        """Write what is queued, then stop the writer thread (its driver is done with the record)."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _write_behind(self) -> None:
        while True:
            with self._changed:
                while self._written == len(self._lines) and not self._closing:
                    self._changed.wait()
                if self._written == len(self._lines):  # closing, and everything is written
                    return
                first, batch = self._written, self._lines[self._written:self._written + _BATCH_LINES]
            data = b"".join(batch)
            name = f"{self.folder}/{_name('seg', first)}"
            try:
                if not self.directory.create_if_absent(name, data):
                    raise RecordConflict(f"record: another driver wrote line {first} of {self.directory}'s "
                                         f"Optuna journal first ({name} exists): this driver stops; resume the "
                                         f"study once the other one has ended")
                self._tail_bytes += len(data)
                self._tail_segments += 1
                if self._tail_bytes > self._base_bytes and self._tail_segments > 1:
                    self._compact(first + len(batch))
            except Exception as err:  # noqa: BLE001 - the driver's next append or flush raises it
                with self._changed:
                    self._failure = err if isinstance(err, RecordConflict) else RecordConflict(
                        f"record: writing {name} failed ({type(err).__name__}: {err}): the study's Optuna "
                        f"journal is behind; resume the study")
                    self._changed.notify_all()
                return
            with self._changed:
                self._written = first + len(batch)
                self._changed.notify_all()

    def _compact(self, upto: int | None = None) -> None:
        """A new base of the first ``upto`` lines (all by default); a reader then lists only the segments after it.

        Segments are never deleted: a segment's name must stay taken for good, or a driver that is
        behind could create it again after a compaction and its write would not be refused. They
        add the journal's size once more to the bucket; older bases go.
        """
        upto = len(self._lines) if upto is None else upto
        data = b"".join(self._lines[:upto])
        name = f"{self.folder}/{_name('base', upto)}"
        self.directory.create_if_absent(name, data)  # already there: another open wrote this same base
        self.directory.delete_many(self._old_bases)
        self._old_bases = [name]
        self._base_bytes, self._tail_bytes, self._tail_segments = len(data), 0, 0

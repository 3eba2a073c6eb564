"""Optuna's own storage is the one record of every search trial.

Each cell's search is one Optuna study named ``<study id>/<cell>``, kept in a journal file in the
study's directory (``optuna.journal``) or, with ``optuna_storage:`` in the config, in a database
(e.g. the compose stack's Postgres). Anything that speaks Optuna reads it: ``optuna.load_study``,
Optuna's plots, optuna-dashboard. Optuna's public API is used here (the storage interface, ask/tell,
user attributes) but for one undocumented constructor, ``optuna.Trial(study, trial_id)`` in
``trial_handle`` (guarded by tests/test_private_apis.py): nothing is pickled, so a study outlives an Optuna upgrade.

Per trial the record holds the cell's Optuna params, its intermediate ``val_error`` per epoch, and as
user attributes ``hparams`` (the full configuration), ``seed``, ``tune_trial_id`` (its latest Tune trial)
and ``trial_seconds``. A trial still running when its driver died is suggested again under its own
number (``PerCellSearcher.orphans``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend
from optuna.trial import TrialState

from study.paths import StudyDir
from study.search.segments import SegmentedJournalBackend

JOURNAL_FILE = "optuna.journal"
# The driver's journal writer per S3 study: the search algorithm and the scheduler that Tune unpickles
# apart after a restore each open the record; sharing the writer keeps them one writer, in sync.
_WRITERS: dict[str, SegmentedJournalBackend] = {}
STATES = ("running", "complete", "pruned", "fail")


class ObjectJournalBackend(BaseJournalBackend):
    """Optuna's journal as one object in object storage without conditional writes (``gs://`` …), for a single
    writer (S3 uses ``SegmentedJournalBackend``).

    Object stores cannot append, so every append writes the whole journal again (one PUT: a reader
    sees the old or the new journal, never half of one). Only the study's driver writes — one driver
    per study is enforced by ``study.lock`` — so the journal is read once and then served from
    memory. Other readers (``--list``, ``optuna.load_study`` through this class) see it as of the
    last write. Journals are small (a few KB per trial), so rewriting them costs little.
    """

    def __init__(self, directory: StudyDir, name: str = JOURNAL_FILE):
        self.directory, self.name = directory, name
        self._lines: list[bytes] = []
        if directory.exists(name):
            self._lines = [line for line in directory.read_bytes(name).splitlines(keepends=True) if line.endswith(b"\n")]

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return [json.loads(line) for line in self._lines[log_number_from:]]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        lines = [(json.dumps(log, separators=(",", ":")) + "\n").encode() for log in logs]
        self.directory.write_bytes(self.name, b"".join(self._lines + lines))
        self._lines += lines


def open_storage(directory: "StudyDir | Path | None", url: str | None = None, writer: bool = False) -> BaseStorage:
    """The study's Optuna storage: ``url`` (a database) if given, else the journal in the study's directory
    (a journal file locally, segment objects on S3 — ``writer``: the driver's, which appends —, one
    rewritten object on other object stores).

    Without either (unit tests of the searcher) the studies live in memory.
    """
    if url:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    if directory is None:
        return optuna.storages.InMemoryStorage()
    directory = StudyDir.of(directory)
    if directory.uri.startswith("s3://"):
        if not writer:
            return JournalStorage(SegmentedJournalBackend(directory, JOURNAL_FILE))
        if directory.uri not in _WRITERS:  # one writer per record in this process, however many searchers open it
            _WRITERS[directory.uri] = SegmentedJournalBackend(directory, JOURNAL_FILE, writer=True)
        return JournalStorage(_WRITERS[directory.uri])
    if directory.local is None:
        return JournalStorage(ObjectJournalBackend(directory))
    directory.makedirs()
    return JournalStorage(JournalFileBackend(str(directory.local / JOURNAL_FILE)))


def flush_record(directory: "StudyDir | None") -> None:
    """Wait until the study's record holds everything this driver appended (S3 writes it behind the loop;
    the other storages write as they go)."""
    writer = _WRITERS.get(directory.uri) if directory is not None else None
    if writer is not None:
        writer.flush()


def close_record(directory: "StudyDir | None") -> None:
    """Write what this driver appended and stop the record's writer thread (its driver is done)."""
    writer = _WRITERS.pop(directory.uri, None) if directory is not None else None
    if writer is not None:
        writer.close()
        writer.flush()  # raises what the writer met on its last segments


def cell_study_name(study_id: str, cell: str) -> str:
    return f"{study_id}/{cell}" if study_id else cell


def open_cell_study(storage: BaseStorage, study_id: str, cell: str,
                    make_sampler: Callable[[int], optuna.samplers.BaseSampler],
                    pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create the cell's study, or open it again with a sampler seeded by how many trials it holds.

    A sampler's random state is not part of the record; seeding it from (cell, trials so far) makes
    a resumed search reproducible without ever repeating the start-up draws of the first session.
    """
    name = cell_study_name(study_id, cell)
    held = 0
    if name in optuna.get_all_study_names(storage):
        held = len(optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False))
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize", load_if_exists=True,
                                sampler=make_sampler(held), pruner=pruner)
    if not held and "cell" not in study.user_attrs:
        study.set_user_attr("cell", cell)
        study.set_user_attr("study_id", study_id)
    return study


def _trial_id(storage: BaseStorage, study: optuna.Study, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def trial_handle(storage: BaseStorage, study: optuna.Study, number: int) -> optuna.Trial:
    """The ask-and-tell handle of a running trial, e.g. after the driver was restarted."""
    return optuna.Trial(study, _trial_id(storage, study, number))


def state_counts(study: optuna.Study) -> dict[str, int]:
    states = [t.state.name.lower() for t in study.get_trials(deepcopy=False)]
    return {s: states.count(s) for s in STATES}


def running_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def study_counts(storage: BaseStorage, study_id: str) -> dict[str, dict[str, int]]:
    """Per cell of one study, its trials by state (for ``--list``); read-only."""
    prefix = f"{study_id}/"
    out = {}
    for name in optuna.get_all_study_names(storage):
        if name.startswith(prefix):
            out[name[len(prefix):]] = state_counts(optuna.load_study(study_name=name, storage=storage))
    return out


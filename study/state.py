"""A study's own record in its storage directory: what ``--resume`` and ``--list`` read.

``<storage>/<study_id>/study.json`` holds the resolved config, the MLflow parent run and the state
of each stage; ``optuna.journal`` the per-cell Optuna studies, the record of every search trial
(``study.search.record``; or a database, ``optuna_storage``); ``search-<n>`` and ``final-<n>`` are Tune
experiment directories (``Tuner.restore`` continues an unfinished one).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from study.paths import StudyDir, study_dirs

STATE_FILE, DEADLINE_FILE = "study.json", "deadline"


class StudyStatus(StrEnum):
    """Where a study stands, as ``study.json`` and ``--list`` say it."""

    RUNNING = "running"
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM, a kill: --resume continues it
    BUDGET_EXHAUSTED = "budget-exhausted"  # its time budget ended it between trials: --resume continues it
    FINISHED = "finished"
    FAILED = "failed"


class StudyNotFound(ValueError):
    """``--resume`` of a study that is not in the storage path; the message is one line."""


@dataclass
class StudyState:
    study_id: str
    name: str
    config_yaml: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    created: float = field(default_factory=time.time)
    status: str = StudyStatus.RUNNING
    search_runs: list[str] = field(default_factory=list)  # Tune experiment names, in order
    final_runs: list[str] = field(default_factory=list)
    search_complete: list[bool] = field(default_factory=list)
    final_complete: list[bool] = field(default_factory=list)

    def save(self, directory: "StudyDir | Path") -> None:
        """Atomic (a renamed temporary locally, one PUT on object storage): never half a file."""
        StudyDir.of(directory).write_text(STATE_FILE, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: "StudyDir | Path") -> "StudyState":
        return cls(**json.loads(StudyDir.of(directory).read_text(STATE_FILE)))


def study_dir(storage: "str | Path", study_id: str) -> StudyDir:
    return StudyDir(str(storage), study_id)


def all_states(storage: "str | Path") -> list[StudyState]:
    states = []
    for directory in study_dirs(str(storage)):
        try:
            states.append(StudyState.load(directory))
        except (OSError, ValueError, TypeError):
            continue  # not a study (or one being created): skipped
    return sorted(states, key=lambda s: s.created, reverse=True)


def find_state(storage: "str | Path", wanted: str | None) -> StudyState:
    """The latest study by default, else a study id or a study name (its latest launch)."""
    states = all_states(storage)
    if not states:
        raise StudyNotFound(f"resume: no studies under {storage}: nothing to resume")
    if wanted is None:
        return states[0]
    for state in states:
        if wanted in (state.study_id, state.name):
            return state
    known = ", ".join(s.study_id for s in states[:20])
    raise StudyNotFound(f"resume: unknown study {wanted!r}: studies under {storage}: {known}")


def write_deadline(directory: "StudyDir | Path", max_hours: float | None) -> float | None:
    directory = StudyDir.of(directory)
    if max_hours is None:
        directory.delete(DEADLINE_FILE)
        return None
    deadline = time.time() + max_hours * 3600.0
    directory.write_text(DEADLINE_FILE, str(deadline))
    return deadline


def read_deadline(directory: "StudyDir | Path | None") -> float | None:
    if directory is None:
        return None
    try:
        return float(StudyDir.of(directory).read_text(DEADLINE_FILE))
    except (OSError, ValueError):
        return None

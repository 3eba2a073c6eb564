"""A study's own record in its storage directory: what ``--resume`` and ``--list`` read.

``<storage>/<study_id>/study.json`` holds the resolved config, the MLflow parent run and the state
of each stage; ``searcher.pkl`` the per-cell Optuna studies after each search run; ``search-<n>``
and ``final-<n>`` are Tune experiment directories (``Tuner.restore`` continues an unfinished one).
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE, SEARCHER_FILE, DEADLINE_FILE = "study.json", "searcher.pkl", "deadline"


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
    status: str = "running"  # running | interrupted | budget-exhausted | finished | failed
    search_runs: list[str] = field(default_factory=list)  # Tune experiment names, in order
    final_runs: list[str] = field(default_factory=list)
    search_complete: list[bool] = field(default_factory=list)
    final_complete: list[bool] = field(default_factory=list)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(directory / STATE_FILE)  # atomic: a killed driver never leaves half a file

    @classmethod
    def load(cls, directory: Path) -> "StudyState":
        return cls(**json.loads((directory / STATE_FILE).read_text()))


def study_dir(storage: Path, study_id: str) -> Path:
    return storage / study_id


def all_states(storage: Path) -> list[StudyState]:
    states = []
    for path in sorted(storage.glob(f"*/{STATE_FILE}")):
        try:
            states.append(StudyState.load(path.parent))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(states, key=lambda s: s.created, reverse=True)


def find_state(storage: Path, wanted: str | None) -> StudyState:
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


def save_searcher(directory: Path, searcher) -> None:
    tmp = directory / (SEARCHER_FILE + ".tmp")
    tmp.write_bytes(pickle.dumps(searcher.get_state()))
    tmp.replace(directory / SEARCHER_FILE)


def load_searcher_state(directory: Path) -> dict | None:
    path = directory / SEARCHER_FILE
    return pickle.loads(path.read_bytes()) if path.exists() else None


def write_deadline(directory: Path, max_hours: float | None) -> float | None:
    path = directory / DEADLINE_FILE
    if max_hours is None:
        path.unlink(missing_ok=True)
        return None
    deadline = time.time() + max_hours * 3600.0
    path.write_text(str(deadline))
    return deadline


def read_deadline(directory: Path | None) -> float | None:
    if directory is None:
        return None
    path = directory / DEADLINE_FILE
    try:
        return float(path.read_text())
    except (OSError, ValueError):
        return None

"""Free-space checks: a study stops cleanly before a full disk can cost a checkpoint or a run.

Before anything starts, every local path the study writes (Tune storage, the local MLflow store)
must have ``min_free_gb`` free, or the launch fails with one line. While the study runs,
``DiskGuard`` checks again after every trial result; below the threshold it stops the study the way
Ctrl-C does (Tune checkpoints the running trials and saves its state), so ``--resume`` continues
without losing or repeating anything once space is freed.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from ray import tune


class DiskSpaceError(RuntimeError):
    """Not enough free space; the message is one line. ``resumable``: it stopped a running study."""

    resumable = False


def _existing(path: Path) -> Path:
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_gb(path: Path) -> float:
    return shutil.disk_usage(_existing(path)).free / 1e9


def short_of_space(paths: list[Path], min_gb: float) -> tuple[Path, float] | None:
    """The first path with less than ``min_gb`` free, with its free space; None when all have enough."""
    for path in paths:
        free = free_gb(path)
        if free < min_gb:
            return path, free
    return None


def check_free_space(paths: list[Path], min_gb: float) -> None:
    short = short_of_space(paths, min_gb)
    if short is not None:
        path, free = short
        raise DiskSpaceError(f"min_free_gb: only {free:.2f} GB free under {path} (min_free_gb is {min_gb:g}); free "
                             f"space, choose another --storage-path, or lower min_free_gb")


class DiskGuard(tune.Callback):
    """Stops the study like Ctrl-C when a watched path runs short of space (checked on every result)."""

    tripped: tuple[Path, float] | None = None  # per driver process: Tuner.restore brings back a pickled copy

    def __init__(self, paths: list[Path], min_gb: float):
        self.paths, self.min_gb = [Path(p) for p in paths], min_gb
        DiskGuard.tripped = None

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if DiskGuard.tripped is None and self.min_gb > 0:
            DiskGuard.tripped = short_of_space(self.paths, self.min_gb)
            if DiskGuard.tripped is not None:
                os.kill(os.getpid(), signal.SIGINT)  # Tune's graceful stop: checkpoint, save state, return

    def error(self, study_id: str) -> DiskSpaceError:
        path, free = DiskGuard.tripped
        err = DiskSpaceError(f"min_free_gb: only {free:.2f} GB left under {path} (min_free_gb is {self.min_gb:g}): "
                              f"the study stopped with its trials checkpointed; free space, then: "
                             f"python -m study.launch --resume {study_id}")
        err.resumable = True
        return err

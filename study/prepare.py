"""The study's data, made ready once by the driver before any trial; workers only read it.

One ``data_root`` serves every dataset of a study, each source in the folder its spec names
(``datasets.DatasetSpec.data_folder``): torchvision's ``MNIST/raw/`` (the MNIST family), ``svhn/``
(``train_32x32.mat``, ``test_32x32.mat``), ``svhn-multi/`` (``train.csv``, ``test.csv``, ``images/``)
and ``plankton/`` (a class-per-folder image tree); the last two are read only, never downloaded
(the loaders say so when files are missing). On a cluster it must be a path every node
sees (shared storage). The driver downloads what is missing (only with ``download``) under a file
lock in ``data_root``, so two drivers, or a driver and a resumed one, never write the same files at
once; then it reads every source, which fails early, in one line, on missing or unreadable files.
Trials never download: concurrent trials on one host would race on the same files.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from trainables.data import DataError, MnistSplits, data_source, load_data
from trainables.datasets import source_spec

LOCK_NAME = ".stn-study-data.lock"
WAIT_NOTICE_S = 2.0  # say that we wait for another process only if it takes this long


def source_root(data_root: str | None, source: str) -> str | None:
    """Where ``source`` lives under the study's ``data_root`` (None: MNIST's embedded subset), as its spec says."""
    if data_root is None:
        return None
    folder = source_spec(source).data_folder
    return str(Path(data_root) / folder) if folder else data_root


def study_sources(datasets) -> list[str]:
    """The data sources of these datasets, in order, once each (the MNIST family shares one)."""
    return list(dict.fromkeys(data_source(d) for d in datasets))


@contextmanager
def data_lock(data_root: str | None, create: bool, say: Callable[[str], None] = print):
    """Hold the lock of ``data_root`` (its file made only if ``create``, i.e. when downloading); a reader waits
    on a lock file a preparer made, and a read-only or absent root is read unlocked."""
    root = Path(data_root) if data_root else None
    if root is not None and create:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataError(f"data_root: cannot create {root} to download into ({err.strerror})") from None
    if root is None or not root.is_dir() or not os.access(root, os.W_OK):
        yield
        return
    if not create and not (root / LOCK_NAME).exists():  # only reading, and no one ever prepared here: no file made
        yield
        return
    lock = FileLock(str(root / LOCK_NAME))
    try:
        lock.acquire(timeout=WAIT_NOTICE_S)
    except Timeout:
        say(f"data: waiting for another process that prepares {root}")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def prepare(datasets, data_root: str | None, download: bool, say: Callable[[str], None] = print,
            load: Callable[..., MnistSplits] = load_data) -> list[MnistSplits]:
    """Download (if asked) and read every source of ``datasets``, under the data root's lock.

    ``load(source, root, download)`` is the loader (the trainables' own; its download fetches only
    missing files). Returns the splits per source; raises a one-line ``DataError``.
    """
    splits = []
    with data_lock(data_root, create=download, say=say):
        for source in study_sources(datasets):
            splits.append(load(source, source_root(data_root, source), download))
    return splits


def provenance(splits: list[MnistSplits]) -> tuple[str, str]:
    """(source line, digest) for the parent run's tags: one source as before, several joined."""
    return "; ".join(s.source for s in splits), "+".join(s.digest for s in splits)

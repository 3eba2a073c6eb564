"""The Python API of a study: ``run(config)`` a new one, ``resume`` an interrupted or extended one.

Both hold the one-driver guard for the study while its ``StudyDriver`` runs, and treat SIGTERM and
SIGHUP like Ctrl-C (``study.signals``): every way a driver stops leaves the study resumable.
"""

from __future__ import annotations

from study.config import StudyConfig
from study.driver import StudyDriver
from study.paths import StudyDir, artifacts_root, storage_root
from study.signals import graceful_stop
from study.state import find_state, study_dir
from study.trial import train_cell


def one_driver(directory: StudyDir, study_id: str):
    """The one-driver guard (``study.lock.study_lock``): on object stores other than S3, this machine's spool
    folder of the study holds it, so it guards against a second driver here only."""
    from study.lock import study_lock

    return study_lock(directory, study_id, artifacts_root() / "spool" / directory.name)


def run(cfg: StudyConfig, quiet: bool = False, report: bool = True, max_hours: float | None = None,
        cluster: bool = False, address: str | None = None, trainable=train_cell, callbacks=()) -> str:
    """Run the study end to end and return its study id. Raises ConfigError / DataError / TrackingError.

    ``trainable`` and ``callbacks`` replace the trial's function and add Tune callbacks (the driver benchmark)."""
    driver = StudyDriver(cfg, quiet, report, max_hours, address, cluster, trainable, callbacks)
    with graceful_stop():  # SIGTERM / SIGHUP: like Ctrl-C
        try:
            state = driver.start()
            with one_driver(driver.directory, state.study_id):
                return driver.execute()
        finally:
            driver.shutdown()  # also when it stopped before execute (another driver holds the study)


def resume(wanted: str | None, changes: dict | None = None, storage_path: str | None = None, quiet: bool = False,
           report: bool = True, max_hours: float | None = None, cluster: bool = False, address: str | None = None,
           names: dict | None = None, trainable=train_cell) -> str:
    """Continue an interrupted study or extend a finished one (more trials per cell, more final seeds).

    ``changes`` (config field → value) go on top of the saved config. The effective config is written to
    ``study.json`` before any run starts, so an interrupted extension resumes as the extended study.
    Raises ``StudyLocked`` while another driver runs the study.
    """
    from study.extension import resumed_config

    root = storage_root(storage_path)
    state = find_state(root, wanted or None)
    where = {"storage_path": storage_path} if storage_path else {}  # the study lives where it was found
    cfg = resumed_config(state, {**where, **(changes or {})}, names)
    driver = StudyDriver(cfg, quiet, report, max_hours, address, cluster, trainable)
    with graceful_stop(), one_driver(study_dir(root, state.study_id), state.study_id):
        try:
            driver.attach(state)
            driver.record_config()  # every check passed: now the extension is a fact of the study
            return driver.execute()
        finally:
            driver.shutdown()

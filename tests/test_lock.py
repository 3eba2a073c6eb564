"""One driver per study: a second driver is refused naming the first; a killed driver's lock is taken over.

The holder is a real second process; the study is a record on disk and the runner's Ray and MLflow work
is replaced by a stand-in that notes who held the lock while it ran.
"""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import saved_study

from study import api, launch
from study.driver import StudyDriver
from study.lock import HOLDER_FILE, driver_lock, holder
from study.state import study_dir

ROOT = Path(__file__).resolve().parent.parent
HOLD = ("import sys, time; from pathlib import Path; from study.lock import driver_lock\n"
        "with driver_lock(Path(sys.argv[1]), sys.argv[2]):\n    print('held', flush=True); time.sleep(600)")


@pytest.fixture
def stand_in(monkeypatch):
    """``attach``/``execute`` without Ray or MLflow; ``seen`` holds the lock's holder during each execute."""
    seen = []

    def execute(self):
        seen.append(holder(self.directory.local))
        if getattr(self, "fail", None):
            raise self.fail
        return self.state.study_id

    monkeypatch.setattr(StudyDriver, "attach", lambda self, state: setattr(self, "state", state))
    monkeypatch.setattr(StudyDriver, "execute", execute)
    return seen


def test_a_second_driver_is_refused_naming_the_holder_and_a_killed_holders_lock_is_taken_over(tmp_path, stand_in,
                                                                                             capsys):
    storage = tmp_path / "tune"
    study_id = saved_study(storage)
    directory = study_dir(storage, study_id).local
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), study_id], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "held"
        record = (directory / "study.json").read_bytes()
        argv = ["--resume", study_id, "--storage-path", str(storage), "--quiet"]
        assert launch.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"host {socket.gethostname()}, pid {proc.pid}" in err[0], err
        assert err[0].startswith(f"error: study {study_id} is being run by another driver")
        assert stand_in == [] and (directory / "study.json").read_bytes() == record  # nothing ran or was written
    finally:
        proc.send_signal(signal.SIGKILL)  # a driver killed outright: no chance to release anything
        proc.wait(timeout=30)
    assert holder(directory)["pid"] == proc.pid  # its sidecar is left behind, its lock is not
    assert launch.main(argv) == 0
    assert stand_in[0]["pid"] == os.getpid() and stand_in[0]["host"] == socket.gethostname()
    assert not (directory / HOLDER_FILE).exists()  # released at the end


@pytest.mark.parametrize("fail", [None, KeyboardInterrupt(), RuntimeError("boom")], ids=["done", "ctrl-c", "error"])
def test_a_new_study_holds_the_lock_while_it_runs_and_releases_it_on_every_exit(tmp_path, stand_in, monkeypatch,
                                                                              fail):
    storage = tmp_path / "tune"
    study_id = saved_study(storage)

    def start(self):  # a study that exists on disk, as StudyDriver.start leaves it
        from study.state import StudyState

        self.state, self.fail = StudyState.load(study_dir(storage, study_id)), fail
        return self.state

    monkeypatch.setattr(StudyDriver, "start", start)
    cfg = launch.study_config.load("smoke", overrides={"storage_path": str(storage)})
    if fail is None:
        assert api.run(cfg, quiet=True) == study_id
    else:
        with pytest.raises(type(fail)):
            api.run(cfg, quiet=True)
    assert stand_in[0]["pid"] == os.getpid()
    with driver_lock(study_dir(storage, study_id).local, study_id):  # free again
        pass

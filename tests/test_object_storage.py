"""``--storage-path s3://…`` end to end against a real S3-compatible server on loopback: a study is launched,
SIGKILLed, listed and resumed from other working directories, and ends with exactly its configured trials;
then extended, stopped with Ctrl-C and resumed again; everything of the study is in the bucket and nothing in a
local ``s3:`` folder."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import S3Server, epochs_logged
from study.paths import StudyDir
from study.search.record import JOURNAL_FILE, ObjectJournalBackend
from study.report.data import load_study

BASE = ["--name", "objects", "--variants", "CNN", "--epochs", "3", "--train-size", "256", "--set", "test_passes=1",
        "--set", "grace_period=10", "--max-concurrent", "1", "--cpus-per-trial", "1", "--quiet"]


@pytest.fixture(scope="module")
def s3():
    server = S3Server().start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)  # this process reads the bucket too (pyarrow, boto3)
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


def launch(cwd, s3, tracking, *extra, wait=True):
    env = {**os.environ, **s3.env, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp"),
           "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "study.launch", *BASE, "--tracking-uri", tracking,
           "--storage-path", f"s3://{s3.bucket}/studies", *extra]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    if wait:
        out, _ = proc.communicate(timeout=400)
        return proc.returncode, out
    return proc


def test_the_journal_backend_writes_whole_journals_a_reader_can_load(s3):
    directory = StudyDir(f"s3://{s3.bucket}/unit", "journal-check")
    storage = optuna.storages.JournalStorage(ObjectJournalBackend(directory))
    study = optuna.create_study(study_name="cell", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1) ** 2, n_trials=3)
    again = optuna.load_study(study_name="cell", storage=optuna.storages.JournalStorage(ObjectJournalBackend(directory)))
    assert [t.value for t in again.trials] == [t.value for t in study.trials]
    assert f"unit/journal-check/{JOURNAL_FILE}" in s3.keys("unit/")


def test_a_study_on_s3_is_killed_and_resumed_from_elsewhere_with_exactly_its_trials(s3, tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first, second, third = (tmp_path / name for name in ("first", "second", "third"))
    for folder in (first, second, third):
        folder.mkdir()
    proc = launch(first, s3, tracking, "--trials-per-cell", "3", "--final-seeds", "0", wait=False)
    deadline = time.time() + 300
    while not any(k.endswith("/study.json") for k in s3.keys("studies/")) or epochs_logged(tracking, "objects") < 4:
        # (the store is opened only once the study exists: before, the launcher may still be creating it)
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    listed = subprocess.run([sys.executable, "-m", "study.launch", "--list", "--storage-path",
                             f"s3://{s3.bucket}/studies"], cwd=third, env={**os.environ, **s3.env},
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "objects-" in listed.stdout and "running" in listed.stdout, listed
    code, out = launch(second, s3, tracking, "--resume")  # another working directory, as another machine would
    assert code == 0, out[-3000:]
    frame = load_study(MlflowClient(tracking), "objects").runs
    search, final = frame[frame["stage"] == "search"], frame[frame["stage"] == "final"]
    assert len(search) == 3 and len(final) == 1 and frame["trial_id"].is_unique
    assert not (frame["status"] == "RUNNING").any()
    study_id = frame["study_id"].iloc[0]
    keys = s3.keys(f"studies/{study_id}/")
    assert f"studies/{study_id}/study.json" in keys and f"studies/{study_id}/{JOURNAL_FILE}" in keys
    assert any(k.startswith(f"studies/{study_id}/search-1/") for k in keys)  # Tune's run, checkpoints included
    journal = optuna.storages.JournalStorage(ObjectJournalBackend(StudyDir(f"s3://{s3.bucket}/studies", study_id)))
    trials = optuna.load_study(study_name=f"{study_id}/rotated-mnist/CNN", storage=journal).trials
    assert len([t for t in trials if not t.user_attrs.get("lost")]) == 3
    for folder in (first, second, third):  # nothing became a local "s3:" folder
        assert not list(folder.rglob("s3:*")) and not (folder / "mlflow_artifacts" / "tune").exists()
    listed = subprocess.run([sys.executable, "-m", "study.launch", "--list", "--storage-path",
                             f"s3://{s3.bucket}/studies"], cwd=third, env={**os.environ, **s3.env},
                            capture_output=True, text=True, timeout=120)
    row = [line for line in listed.stdout.splitlines() if study_id in line][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "finished" and cells[3:5] == ["1", "3"], listed.stdout  # status, cells, trials

    # extended by two trials per cell, stopped with Ctrl-C in the first of them, resumed: exactly 5 search trials
    logged = epochs_logged(tracking, "objects")
    proc = launch(first, s3, tracking, "--resume", study_id, "--trials-per-cell", "5", wait=False)
    deadline = time.time() + 300
    while epochs_logged(tracking, "objects") <= logged:  # a new trial's first epoch
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and f"--resume {study_id}" in out, out[-3000:]
    saved = json.loads(StudyDir(f"s3://{s3.bucket}/studies", study_id).read_text("study.json"))
    assert "trials_per_cell: 5" in saved["config_yaml"]  # the extension is the study's now, in the bucket
    code, out = launch(second, s3, tracking, "--resume", study_id)
    assert code == 0, out[-3000:]
    frame = load_study(MlflowClient(tracking), "objects").runs
    assert (frame["stage"] == "search").sum() == 5 and not (frame["status"] == "RUNNING").any()
    journal = optuna.storages.JournalStorage(ObjectJournalBackend(StudyDir(f"s3://{s3.bucket}/studies", study_id)))
    trials = optuna.load_study(study_name=f"{study_id}/rotated-mnist/CNN", storage=journal).trials
    assert len([t for t in trials if not t.user_attrs.get("lost")]) == 5

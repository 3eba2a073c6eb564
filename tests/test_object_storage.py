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
from conftest import epochs_logged
from mlflow.tracking import MlflowClient

from study.paths import StudyDir, s3_client
from study.report.data import load_study
from study.search.record import JOURNAL_FILE
from study.search.segments import RecordConflict, SegmentedJournalBackend

pytestmark = pytest.mark.usefixtures("writers_are_closed")

BASE = ["--name", "objects", "--variants", "CNN", "--epochs", "3", "--train-size", "256", "--set", "test_passes=1",
        "--set", "grace_period=10", "--max-concurrent", "1", "--cpus-per-trial", "1", "--quiet"]


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


@pytest.fixture
def put_bytes(s3):
    """Bytes of every PutObject body sent through the process's S3 client, as the bucket receives them."""
    sent = []

    def count(params, **_):  # the serialised request: its body as sent
        body = params["body"]
        sent.append(body.getbuffer().nbytes if hasattr(body, "getbuffer") else len(body))

    client = s3_client()
    client.meta.events.register("before-call.s3.PutObject", count)
    yield sent
    client.meta.events.unregister("before-call.s3.PutObject", count)


def test_the_journal_on_s3_writes_each_append_once_and_a_reader_loads_it(s3, put_bytes):
    """300 trials x 5 epochs: each segment's PUT carries only lines no other segment holds, and the whole study
    writes <= 3x the bytes the record holds at the end (the rewrite-whole journal wrote ~150x here)."""
    directory = StudyDir(f"s3://{s3.bucket}/unit", "segments")
    backend = SegmentedJournalBackend(directory, JOURNAL_FILE, writer=True)
    storage = optuna.storages.JournalStorage(backend)
    study = optuna.create_study(study_name="cell", storage=storage)

    def objective(trial):
        for step in range(5):
            trial.report(trial.suggest_float("x", 0, 1) + step, step)
        return trial.params["x"] ** 2

    study.optimize(objective, n_trials=300)
    backend.flush()  # written behind the loop: wait for the last lines
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket,
                                                                  Prefix=f"unit/segments/{JOURNAL_FILE}.d/")
    sizes = {item["Key"].rpartition("/")[2]: int(item["Size"]) for page in pages for item in page["Contents"]}
    segments = [size for name, size in sorted(sizes.items()) if name.startswith("seg-")]
    final_size = len(b"".join(SegmentedJournalBackend(directory, JOURNAL_FILE)._lines))
    assert sum(segments) == final_size and final_size <= sum(sizes.values()) <= 2 * final_size
    lines = len(backend._lines)
    assert 300 * 7 < lines and len(segments) <= lines  # one segment per batch of queued lines, never a line twice
    assert max(segments) <= 1_000 * 300  # a batch is capped in lines: a PUT stays small however long the journal
    assert sum(put_bytes) / final_size <= 3.0, (sum(put_bytes), final_size)  # segments + the geometric bases
    again = optuna.load_study(study_name="cell", storage=optuna.storages.JournalStorage(
        SegmentedJournalBackend(directory, JOURNAL_FILE)))
    assert [t.value for t in again.trials] == [t.value for t in study.trials]
    assert len([k for k in s3.keys(f"unit/segments/{JOURNAL_FILE}.d/") if "/base-" in k]) == 1


def test_a_second_writer_is_refused_and_loses_nothing_of_the_first(s3):
    """Two drivers with their own copy of the record: the one that is behind cannot write line N again."""
    directory = StudyDir(f"s3://{s3.bucket}/unit", "two-writers")
    first_backend = SegmentedJournalBackend(directory, JOURNAL_FILE, writer=True)
    study = optuna.create_study(study_name="cell", storage=optuna.storages.JournalStorage(first_backend))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    first_backend.flush()
    second_backend = SegmentedJournalBackend(directory, JOURNAL_FILE, writer=True)
    stale = optuna.load_study(study_name="cell", storage=optuna.storages.JournalStorage(second_backend))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)  # the first goes on
    first_backend.flush()
    with pytest.raises(RecordConflict, match="another driver wrote line"):
        stale.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
        second_backend.flush()  # the writer thread's refusal reaches the driver at its next append or flush
    reader = optuna.load_study(study_name="cell", storage=optuna.storages.JournalStorage(
        SegmentedJournalBackend(directory, JOURNAL_FILE)))
    assert [t.value for t in reader.trials] == [t.value for t in study.trials] and len(reader.trials) == 4


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
    assert f"studies/{study_id}/study.json" in keys
    assert any(k.startswith(f"studies/{study_id}/{JOURNAL_FILE}.d/") for k in keys)
    assert any(k.startswith(f"studies/{study_id}/search-1/") for k in keys)  # Tune's run, checkpoints included
    journal = optuna.storages.JournalStorage(SegmentedJournalBackend(StudyDir(f"s3://{s3.bucket}/studies", study_id),
                                                                         JOURNAL_FILE))
    trials = optuna.load_study(study_name=f"{study_id}/rotated-mnist/CNN", storage=journal).trials
    assert len(trials) == 3  # a trial Tune's snapshot missed was continued under its own number, not lost
    for folder in (first, second, third):  # nothing became a local "s3:" folder
        assert not list(folder.rglob("s3:*")) and not (folder / "mlflow_artifacts" / "tune").exists()
    listed = subprocess.run([sys.executable, "-m", "study.launch", "--list", "--storage-path",
                             f"s3://{s3.bucket}/studies"], cwd=third, env={**os.environ, **s3.env},
                            capture_output=True, text=True, timeout=120)
    row = [line for line in listed.stdout.splitlines() if study_id in line][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "finished" and cells[3:5] == ["1", "3"], listed.stdout  # status, cells, trials
    assert cells[-1] == "1/1", listed.stdout  # the final run, counted in MLflow wherever it ran

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
    journal = optuna.storages.JournalStorage(SegmentedJournalBackend(StudyDir(f"s3://{s3.bucket}/studies", study_id),
                                                                         JOURNAL_FILE))
    trials = optuna.load_study(study_name=f"{study_id}/rotated-mnist/CNN", storage=journal).trials
    assert len(trials) == 5


HOLD_LEASE = ("import sys, time; from study.paths import StudyDir; from study.lock import s3_lease\n"
              "with s3_lease(StudyDir(sys.argv[1], sys.argv[2]), sys.argv[2]):\n    print('held', flush=True); time.sleep(600)")


def test_one_driver_per_study_on_s3_across_directories_and_machines(s3, tmp_path):
    """A live driver's lease refuses a second one from any directory; a SIGKILLed driver's is taken over at once
    on its machine; another machine's lease is respected until it goes stale, then taken over."""
    import socket

    from study.lock import LEASE_FILE, LEASE_TTL_S, StudyLocked, s3_lease

    root, study_id = f"s3://{s3.bucket}/leases", "leased"
    directory = StudyDir(root, study_id)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LEASE, root, study_id], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, env={**os.environ, **s3.env})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StudyLocked, match=f"host {socket.gethostname()}, pid {holder.pid}"):
            with s3_lease(directory, study_id):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with s3_lease(directory, study_id):  # its holder is dead: taken over without waiting
        assert json.loads(directory.read_bytes(LEASE_FILE))["pid"] == os.getpid()
    assert not directory.exists(LEASE_FILE)  # released at the end

    def foreign(age: float) -> None:
        body = {"host": "another-machine", "pid": 1, "started": "earlier", "token": "x", "renewed": time.time() - age}
        directory.write_bytes(LEASE_FILE, json.dumps(body).encode())

    foreign(10.0)
    with pytest.raises(StudyLocked, match="host another-machine"):
        with s3_lease(directory, study_id):
            pass
    foreign(LEASE_TTL_S + 5)
    with s3_lease(directory, study_id):
        assert json.loads(directory.read_bytes(LEASE_FILE))["host"] == socket.gethostname()


def test_a_resume_from_another_directory_is_refused_while_the_study_runs_on_s3(s3, tmp_path):
    """The issue this guards: a second driver in another working directory used to run beside the first and
    both rewrote the journal. Now it is refused at once, naming the first, and the first ends normally."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    before = {k for k in s3.keys("studies/") if k.endswith("/study.json")}
    proc = launch(first, s3, tracking, wait=False)
    deadline = time.time() + 300
    while True:
        new = [k for k in s3.keys("studies/") if k.endswith("/study.json") and k not in before]
        if new and any(k.endswith("/driver.lease") for k in s3.keys(new[0].rpartition("/")[0] + "/")):
            break
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    study_id = new[0].split("/")[1]
    code, out = launch(second, s3, tracking, "--resume", study_id)
    assert code == 2 and f"study {study_id} is being run by another driver" in out, out[-2000:]
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-3000:]
    assert not any(k.endswith("/driver.lease") for k in s3.keys(f"studies/{study_id}/"))

"""The fault matrix on real Ray and MLflow: tracking server down, disk full, node lost.

Each study is a real ``python -m study.launch`` process; each fault is real (a stopped server, a
filled tmpfs, a Ray node removed) and each test checks that the final store holds every trial.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import MlflowServer, epochs_logged
from mlflow.tracking import MlflowClient

from study.report.data import load_study
from study.trial import RESUME_DIR

STUDY = ["--variants", "CNN", "--train-size", "256", "--set", "test_passes=1", "--set", "grace_period=20",
         "--final-seeds", "0", "--quiet"]


def launch(cwd: Path, *args, env=None):
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp"), "RAY_USAGE_STATS_ENABLED": "0",
           **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "study.launch", *STUDY, *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.5)
    raise TimeoutError("condition not reached")


def finish(proc, timeout=400) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc.returncode, out


def assert_complete(uri: str, name: str, trials: int, epochs: int) -> None:
    """Every trial has one run, FINISHED, with one val_error point per epoch; the parent is FINISHED."""
    client = MlflowClient(uri)
    study = load_study(client, name)
    runs = study.runs
    assert len(runs) == trials + 1 and runs["trial_id"].is_unique  # search trials + one final run
    assert (runs["status"] == "FINISHED").all() and (runs["outcome"] == "completed").all()
    for run_id, stage in zip(runs["run_id"], runs["stage"], strict=True):
        steps = [m.step for m in client.get_metric_history(run_id, "val_error")]
        assert steps == list(range(1, epochs + 1)), (stage, steps)
    assert client.get_run(study.parent_run_id).info.status == "FINISHED"


def resumable_epoch(state_file) -> int:
    """The last epoch a trial's resume state (study.trial.RESUME_DIR/<trial key>.pt) holds, 0 while there is none."""
    import torch

    try:
        return int(torch.load(state_file, weights_only=False)["epoch"])
    except (OSError, EOFError, RuntimeError, KeyError):
        return 0


def test_tracking_server_down_mid_study_loses_nothing(tmp_path):
    server = MlflowServer(tmp_path / "server").start()
    try:
        proc = launch(tmp_path, "--name", "outage", "--trials-per-cell", "2", "--epochs", "6",
                      "--tracking-uri", server.uri, "--storage-path", str(tmp_path / "tune"))
        wait_for(lambda: epochs_logged(server.uri, "outage") >= 2, proc)
        server.stop()
        time.sleep(12)  # the study trains on (or waits at its end) while updates are spooled
        assert proc.poll() is None
        server.start()
        code, out = finish(proc)
        assert code == 0, out[-3000:]
        assert "unreachable" in out and "is back" in out
        assert_complete(server.uri, "outage", trials=2, epochs=6)
    finally:
        server.stop()


@pytest.fixture()
def small_disk(tmp_path):
    """A real 64 MB filesystem (tmpfs), so a full disk is a full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_filling_up_stops_the_study_cleanly_and_resume_finishes_it(tmp_path, small_disk):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--name", "diskfull", "--trials-per-cell", "2", "--epochs", "8", "--tracking-uri", uri,
            "--storage-path", str(small_disk / "tune"), "--max-concurrent", "1", "--set", "min_free_gb=0.02"]
    proc = launch(tmp_path, *args)
    # opening the sqlite store only once the study exists: never race the launcher's schema migration
    wait_for(lambda: any((small_disk / "tune").glob("*/study.json")) and epochs_logged(uri, "diskfull") >= 2, proc)
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    with filler.open("wb") as f:  # leave 12 MB: under the 20 MB threshold, room for the last checkpoints
        f.write(b"\0" * (free - 12_000_000))
    code, out = finish(proc)
    assert code == 1, out[-3000:]
    assert "min_free_gb: only" in out and "--resume" in out
    assert epochs_logged(uri, "diskfull") < 2 * 8 + 8  # it stopped before the end

    filler.unlink()
    proc = launch(tmp_path, *args, "--resume", "diskfull")
    code, out = finish(proc)
    assert code == 0, out[-3000:]
    assert_complete(uri, "diskfull", trials=2, epochs=8)


def test_too_little_space_before_start_is_refused_and_nothing_is_written(tmp_path, small_disk):
    proc = launch(tmp_path, "--name", "nospace", "--storage-path", str(small_disk / "tune"), "--set",
                  "min_free_gb=1")
    code, out = finish(proc, timeout=120)
    assert code == 2 and "min_free_gb: only 0.07 GB free under" in out
    assert not any(small_disk.iterdir()) and not (tmp_path / "mlflow_artifacts").exists()


def test_a_lost_node_has_its_trials_rescheduled_and_finished(tmp_path):
    from ray.cluster_utils import Cluster

    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    fast_failure_detection = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                              "health_check_timeout_ms": 500, "health_check_failure_threshold": 2}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": fast_failure_detection})
    doomed = cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    server = MlflowServer(tmp_path / "server").start()
    try:
        proc = launch(tmp_path, "--name", "nodeloss", "--cluster", "--address", cluster.address, "--trials-per-cell",
                      "2", "--epochs", "16", "--max-concurrent", "2", "--tracking-uri", server.uri,
                      "--storage-path", str(tmp_path / "shared"), env={"RAY_TMPDIR": os.environ["RAY_TMPDIR"]})

        def both_checkpointed() -> bool:  # a state, not a moment: each running trial has a state to resume from
            trials = list((tmp_path / "shared").glob(f"*/{RESUME_DIR}/*+search-*.pt"))
            return len(trials) >= 2 and all(resumable_epoch(t) >= 2 for t in trials)

        wait_for(both_checkpointed, proc)  # 16 epochs (below the pruner's grace of 20): most of each trial is left
        cluster.remove_node(doomed, allow_graceful=False)
        code, out = finish(proc)
        assert code == 0, out[-3000:]
        assert_complete(server.uri, "nodeloss", trials=2, epochs=16)
        runs = load_study(MlflowClient(server.uri), "nodeloss").runs
        assert (runs["restored_from_epoch"].fillna(0) > 0).any()  # the lost trial resumed from its checkpoint
        assert runs["restarts"].dropna().astype(int).tolist() == [1]  # and its run says so
    finally:
        server.stop()
        cluster.shutdown()

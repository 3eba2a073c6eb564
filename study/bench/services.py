"""Real services on loopback for the benchmarks and the tests: a PostgreSQL server and an S3-compatible server.

Both are the real programs (Debian's PostgreSQL 15, moto's standalone S3 server), started in a
temporary directory on a free port and stopped with their process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_available() -> bool:
    """Debian's PostgreSQL 15 server binaries, and root to run them as the ``postgres`` user."""
    return Path(LocalPostgres.BIN, "postgres").exists() and os.geteuid() == 0


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

    def database(self, name: str) -> str:
        """A new database on this server, as the SQLAlchemy URL Optuna's RDB storage takes (the password comes
        from ``PGPASSWORD``: a study's config never holds one)."""
        self._as_postgres(f"{self.BIN}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "mlflow", name,
                          env={**os.environ, "PGPASSWORD": self.password})
        return f"postgresql+psycopg://mlflow@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # postgres' "fast shutdown"
            self.proc.wait(timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


class S3Server:
    """A real S3-compatible server (moto's standalone server) on loopback, and the environment that points
    boto3, pyarrow and Ray Tune at it."""

    def __init__(self, bucket: str = "stn-study"):
        self.port, self.bucket, self.proc = free_port(), bucket, None
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "test-only", "AWS_SECRET_ACCESS_KEY":
                    "test-only", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self) -> "S3Server":
        self.proc = subprocess.Popen([shutil.which("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the S3 server did not come up") from None
                time.sleep(0.2)
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="test-only",
                            aws_secret_access_key="test-only", region_name="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)

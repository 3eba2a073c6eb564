"""--cluster on a real multi-node Ray cluster (ray.cluster_utils.Cluster) with a real MLflow server."""

import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import LocalPostgres, MlflowServer, free_port
from mlflow.tracking import MlflowClient

from study.cluster import ClusterError, check_cluster_settings, probe_storage
from study.config import ConfigError
from study.report.data import load_study

ROOT = Path(__file__).resolve().parents[1]


def compose_mlflow_command(postgres: LocalPostgres, artifacts: Path):
    """The compose stack's own ``mlflow server`` command, pointed at loopback services.

    Only the host names, the port and the artifact destination change (MinIO cannot run here: the
    server proxies artifacts to a local directory instead, the stack's shared-volume alternative).
    """
    service = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["mlflow"]
    line = service["command"]

    def command(port: int) -> list[str]:
        swaps = {"${POSTGRES_PASSWORD}": postgres.password, "@postgres:5432/": f"@127.0.0.1:{postgres.port}/",
                 "--host 0.0.0.0": "--host 127.0.0.1", "--port 5000": f"--port {port}",
                 "--workers 2": "--workers 1", "--artifacts-destination s3://mlflow": f"--artifacts-destination {artifacts}"}
        text = line
        for old, new in swaps.items():
            assert old in text, f"compose's mlflow command changed: {old!r} not in {line!r}"
            text = text.replace(old, new)
        argv = shlex.split(text)
        assert argv[:2] == ["mlflow", "server"] and "${" not in text
        return [sys.executable, "-m", "mlflow", *argv[1:]]

    env = {k: str(v) for k, v in service["environment"].items() if not k.startswith(("AWS_", "MLFLOW_S3"))}
    return command, env


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, postgres):
    """The stack's MLflow server command on a real Postgres: every cluster test tracks into it."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    command, env = compose_mlflow_command(postgres, artifacts)
    server = MlflowServer(artifacts, command=command, env=env).start()
    yield server.uri
    server.stop()


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_TMPDIR", str(tmp_path_factory.mktemp("ray")))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_cluster_study_lands_trials_on_both_nodes(two_nodes, mlflow_server, postgres, tmp_path):
    import optuna
    import psycopg  # the driver SQLAlchemy 2.1 uses for postgresql:// (the image installs it too)

    with psycopg.connect(host="127.0.0.1", port=postgres.port, user="mlflow", password=postgres.password,
                         dbname="mlflow", autocommit=True) as db:
        db.execute("CREATE DATABASE optuna OWNER mlflow")  # what the stack's postgres-init script does
    optuna_url = f"postgresql://mlflow@127.0.0.1:{postgres.port}/optuna"  # the password from PGPASSWORD
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PGPASSWORD": postgres.password}
    cmd = [sys.executable, "-m", "study.launch", "--cluster", "--address", two_nodes.address, "--name", "clustered",
           "--variants", "CNN", "STN-C0", "--trials-per-cell", "2", "--epochs", "2", "--train-size", "256",
           "--set", "test_passes=1", "--final-seeds", "0", "--max-concurrent", "2", "--tracking-uri", mlflow_server,
           "--storage-path", str(tmp_path / "shared"), "--set", f"optuna_storage={optuna_url}", "--quiet"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    frame = load_study(MlflowClient(mlflow_server), "clustered").runs
    assert len(frame) == 6 and not (frame["status"] == "RUNNING").any()
    assert frame["node_id"].dropna().nunique() == 2  # trials ran on both nodes
    # every search trial is in the Optuna database, and no journal was written beside the study
    os.environ["PGPASSWORD"] = postgres.password
    try:
        names = optuna.get_all_study_names(optuna_url)
        assert sorted(n.split("/", 1)[1] for n in names) == ["rotated-mnist/CNN", "rotated-mnist/STN-C0"]
        assert all(len(optuna.load_study(study_name=n, storage=optuna_url).trials) == 2 for n in names)
    finally:
        del os.environ["PGPASSWORD"]
    assert not list((tmp_path / "shared").glob("*/optuna.journal"))
    # the MLflow record is in Postgres, and the server proxied the figures to its artifact store

    with psycopg.connect(host="127.0.0.1", port=postgres.port, user="mlflow", password=postgres.password,
                         dbname="mlflow") as db, db.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                       "WHERE t.key = 'stage' AND t.value IN ('search', 'final')")
        assert cursor.fetchone()[0] >= 6
    final = frame[frame["stage"] == "final"]["run_id"].iloc[0]
    names = [a.path for a in MlflowClient(mlflow_server).list_artifacts(final, "figures")]
    assert "figures/aligned_examples.png" in names and "figures/figures.npz" in names


def test_cluster_needs_a_tracking_server_and_a_storage_path():
    with pytest.raises(ConfigError, match="tracking_uri: --cluster needs an MLflow tracking server"):
        check_cluster_settings("sqlite:////tmp/x.db", "/shared")
    with pytest.raises(ConfigError, match="storage_path: --cluster needs a storage path"):
        check_cluster_settings("http://127.0.0.1:5000", None)


def test_storage_probe_failure_is_one_line(ray_local, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ClusterError) as info:
        probe_storage(str(blocker / "storage"))
    assert str(info.value).startswith("storage_path: node ") and "\n" not in str(info.value)
    assert probe_storage(str(tmp_path / "ok")) == 1


@pytest.mark.parametrize("address,tracking,needle", [
    ("127.0.0.1:{dead}", "server", "error: cluster: no Ray cluster reachable at '127.0.0.1:"),
    ("127.0.0.1:{dead}", "http://127.0.0.1:{dead}", "error: tracking_uri: MLflow server http://127.0.0.1:"),
])
def test_cluster_flag_without_a_cluster_or_server_fails_fast(mlflow_server, tmp_path, address, tracking, needle):
    dead = free_port()
    tracking = mlflow_server if tracking == "server" else tracking.format(dead=dead)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "study.launch", "--cluster", "--address", address.format(dead=dead),
                           "--tracking-uri", tracking, "--storage-path", str(tmp_path / "s")],
                          cwd=tmp_path, env={**os.environ, "RAY_ADDRESS": ""}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(needle)
    assert time.monotonic() - started < 60


def test_container_commands_on_loopback_with_token_auth(mlflow_server, tmp_path):
    """The compose stack's `ray start` head/worker commands, run outside Docker with a token; a driver joins."""
    token = "0123456789abcdef" * 4
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ADDRESS": "", "RAY_TMPDIR": tempfile.mkdtemp(prefix="rt", dir="/tmp")}
    head = subprocess.Popen(["ray", "start", "--head", "--block", "--port", str(port), "--num-cpus", "1",
                             "--dashboard-host", "127.0.0.1", "--include-dashboard", "false"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    worker = None
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        worker = subprocess.Popen(["ray", "start", "--address", f"127.0.0.1:{port}", "--block", "--num-cpus", "1"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(5)
        cmd = [sys.executable, "-m", "study.launch", "--cluster", "--address", f"127.0.0.1:{port}", "--name", "tokened",
               "--variants", "CNN", "--trials-per-cell", "2", "--epochs", "1", "--train-size", "128", "--set",
               "test_passes=1", "--final-seeds", "--tracking-uri", mlflow_server, "--storage-path",
               str(tmp_path / "shared"), "--quiet"]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        started = time.monotonic()
        wrong = subprocess.run(cmd[:-1] + ["--name", "no-token"], cwd=tmp_path, capture_output=True, text=True,
                               env={**env, "RAY_AUTH_TOKEN": "f" * 64}, timeout=120)
        assert wrong.returncode == 2  # a driver without the cluster's token is turned away, at once, in one line
        assert wrong.stderr.strip().splitlines()[-1].startswith(f"error: cluster: the Ray cluster at '127.0.0.1:{port}' "
                                                                f"refused our token")
        assert time.monotonic() - started < 20
    finally:
        for process in (worker, head):
            if process is not None:
                os.killpg(process.pid, 15)
                process.wait(timeout=60)


def test_ray_client_addresses_are_refused_in_one_line():
    from study.cluster import connect

    with pytest.raises(ClusterError, match=r"^cluster: Ray Client addresses \('ray://head:10001'\) are not supported"):
        connect("ray://head:10001")

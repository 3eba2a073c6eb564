"""Connecting to Ray: a local instance, or a running cluster whose every node must reach the storage.

``--cluster`` joins the cluster at ``--address`` / ``RAY_ADDRESS`` (token auth via
``RAY_AUTH_TOKEN``, as Ray reads it) and probes the storage path from every alive node with a
small Ray task pinned to that node: each writes a file, and the driver must see all of them.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from study.config import ConfigError

LOCAL_SCHEMES = ("sqlite",)


class ClusterError(RuntimeError):
    """The cluster cannot run this study; the message is one line."""


def let_trials_use_prestarted_workers() -> None:
    """Tune gives every trial actor a runtime env only to set ``PL_DISABLE_FORK`` (for PyTorch Lightning,
    which no trial uses), and an actor with a runtime env cannot take the workers Ray pre-starts: the
    first trials would wait ~1.7 s for new ones. Without it they start on the pre-started workers (a private
    Tune setting: tests/test_private_apis.py fails when it changes)."""
    from ray.tune.execution import class_cache

    class_cache.DEFAULT_ENV_VARS.pop("PL_DISABLE_FORK", None)


def init_local(num_cpus: int | None = None) -> None:
    let_trials_use_prestarted_workers()
    # The local instance keeps Ray's token authentication (its token stays in ~/.ray); only the notice that
    # it is on is not shown at every launch. Ray's own logger, by its module name.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=num_cpus, logging_level=logging.WARNING, log_to_driver=False,
                 include_dashboard=False,
                 configure_logging=True)


def check_cluster_settings(tracking_uri: str, storage_path: str | None) -> None:
    if tracking_uri.split(":", 1)[0] in LOCAL_SCHEMES:
        raise ConfigError([f"tracking_uri: --cluster needs an MLflow tracking server that every node can reach "
                           f"(http://host:5000, or MLFLOW_TRACKING_URI), not the local file {tracking_uri}"])
    if not storage_path:
        raise ConfigError(["storage_path: --cluster needs a storage path every node can use: a shared filesystem "
                           "path or an s3:// URI (--storage-path)"])


def connect(address: str | None) -> None:
    """Join a running cluster; one clear line if there is none."""
    target = address or os.environ.get("RAY_ADDRESS") or "auto"
    if target.startswith("ray://"):  # Tune would run the experiment remotely, away from the driver's tracking
        raise ClusterError(f"cluster: Ray Client addresses ({target!r}) are not supported: run the driver on a "
                           f"cluster node (or as the stack's driver container / Job) with --address host:6379")
    let_trials_use_prestarted_workers()
    if ray.is_initialized():
        return
    host, sep, port = target.removeprefix("ray://").rpartition(":")
    if sep and port.isdigit():  # Ray retries a dead GCS address for minutes: answer within seconds instead
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as err:
            raise ClusterError(f"cluster: no Ray cluster reachable at {target!r} ({err.strerror or err}); start one "
                               f"with `ray start --head` or pass --address host:6379") from None
        _check_token(f"{host}:{port}", target)
    try:
        ray.init(address=target, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ClusterError(f"cluster: no Ray cluster reachable at {target!r} ({first}); start one with "
                           f"`ray start --head` or pass --address host:6379") from None


_TOKEN_PROBE = """
import sys
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
try:
    GcsClient(address=sys.argv[1])
except AuthenticationError:
    sys.exit(3)
except Exception:
    sys.exit(0)
"""
TOKEN_REFUSED = 3


def _check_token(gcs_address: str, target: str, timeout: float = 10.0) -> None:
    """A wrong or missing token: one line in a second or two (ray.init would log and retry for ~20 s).

    Asked in a child process with a time limit, killed when it is up: a port that is not a GCS makes
    the client wait ~40 s, and a thread could not be stopped. Anything but a clear refusal is left for
    ``ray.init`` to report (older Ray without token auth, not a GCS, no answer in time).
    """
    try:
        refused = subprocess.run([sys.executable, "-c", _TOKEN_PROBE, gcs_address], capture_output=True,
                                 timeout=timeout).returncode == TOKEN_REFUSED
    except subprocess.TimeoutExpired:
        refused = False
    if refused:
        raise ClusterError(f"cluster: the Ray cluster at {target!r} refused our token: set RAY_AUTH_TOKEN (or "
                           f"~/.ray/auth_token) to the cluster's token")


@ray.remote(num_cpus=0)
def _write_probe(storage: str, token: str) -> tuple[str, str]:
    """Runs on one node: write <storage>/.probe-<token>/<node id> and report where it ran."""
    node = ray.get_runtime_context().get_node_id()
    try:
        if storage.startswith("s3://"):
            import pyarrow.fs

            fs, path = pyarrow.fs.FileSystem.from_uri(storage)
            with fs.open_output_stream(f"{path}/.probe-{token}/{node}") as out:
                out.write(node.encode())
        else:
            directory = Path(storage) / f".probe-{token}"
            directory.mkdir(parents=True, exist_ok=True)
            (directory / node).write_text(node)
        return node, ""
    except Exception as err:  # noqa: BLE001 - any failure is reported, not raised: the driver writes the one-line message
        return node, f"{type(err).__name__}: {err}"


def probe_storage(storage: str, timeout: float = 60.0) -> int:
    """Every alive node writes to the storage path; the driver must see every file. Returns node count."""
    token = uuid.uuid4().hex[:8]
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    tasks = [_write_probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
             .remote(storage, token) for n in nodes]
    try:
        results = ray.get(tasks, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise ClusterError(f"storage_path: probing {storage} timed out after {timeout:.0f}s on some node") from None
    failed = [(node, err) for node, err in results if err]
    if failed:
        node, err = failed[0]
        raise ClusterError(f"storage_path: node {node[:8]} cannot write to {storage} ({err}); every node needs "
                           f"the same shared path or an s3:// URI")
    if not storage.startswith("s3://"):
        seen = {p.name for p in (Path(storage) / f".probe-{token}").glob("*")}
        missing = [node for node, _ in results if node not in seen]
        if missing:
            raise ClusterError(f"storage_path: {storage} is not shared: the driver cannot see what node "
                               f"{missing[0][:8]} wrote there; use a shared filesystem path or an s3:// URI")
        for path in (Path(storage) / f".probe-{token}").glob("*"):
            path.unlink()
        (Path(storage) / f".probe-{token}").rmdir()
    return len(nodes)

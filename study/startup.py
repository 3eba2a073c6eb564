"""Everything a study checks and connects before its first trial: resources, free space, data, Ray, MLflow.

Every check that can refuse a study runs before anything is started or written; a refusal is one line.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from study import cluster
from study.config import StudyConfig
from study.paths import is_remote
from study.prepare import prepare, provenance
from study.signals import STOP
from study.threads import THREAD_PREFIX
from study.tracking.store import check_tracking_uri, ensure_experiment, open_client


def local_cpus() -> int:
    """The CPUs a local Ray instance will offer (Ray's own count honours container CPU limits)."""
    try:
        from ray._private.utils import get_num_cpus

        return int(get_num_cpus())
    except Exception:  # noqa: BLE001 - a private helper: fall back to the OS count
        return os.cpu_count() or 1


def check_local_resources(cfg: StudyConfig) -> None:
    """A local study can only ask for the CPUs and GPUs this machine has; checked before Ray starts."""
    import torch

    for kind, wanted, have in (("gpu", cfg.resources.gpus, torch.cuda.device_count()),
                               ("cpu", cfg.resources.cpus, local_cpus())):
        if wanted > have:
            raise cluster.ConfigError([f"resources.{kind}s: {wanted:g} {kind.upper()} per trial, but this machine "
                                       f"has {have}: allowed 0 to {have} (or --cluster for a cluster)"])


def watched_paths(storage: str, tracking_uri: str) -> list[Path]:
    """Local paths the study writes to: each must keep ``min_free_gb`` free."""
    paths = [] if is_remote(storage) else [Path(storage)]
    if tracking_uri.startswith("sqlite:///"):
        paths.append(Path(tracking_uri.removeprefix("sqlite:///")).parent)
    return paths


def prepare_data(cfg: StudyConfig, say) -> tuple[str, str]:
    """Every dataset of the study, downloaded (if asked) once, here, under a lock: trials only read."""
    splits = prepare([c.dataset for c in cfg.cells()], cfg.data_root, cfg.download, say)
    for each in splits:
        say(each.describe())
    return provenance(splits)


def connect_ray(cfg: StudyConfig, storage: str, tracking_uri: str, use_cluster: bool, address: str | None, say) -> None:
    """Join the cluster (checking that every node reaches the storage) or start a local Ray instance."""
    check_tracking_uri(tracking_uri)
    if use_cluster:
        cluster.check_cluster_settings(tracking_uri, cfg.storage_path)
        with STOP.around_ray_init():  # ray.init puts in its own SIGTERM handler, which exits at once
            cluster.connect(address)
        nodes = cluster.probe_storage(storage)
        say(f"cluster: {nodes} nodes, storage {storage} reachable from all")
    else:
        if not is_remote(storage):
            Path(storage).mkdir(parents=True, exist_ok=True)
        with STOP.around_ray_init():
            cluster.init_local()
    import ray

    for kind, wanted in (("GPU", cfg.resources.gpus), ("CPU", cfg.resources.cpus)):
        have = ray.cluster_resources().get(kind, 0.0)
        if wanted > have:
            field = f"resources.{kind.lower()}s"
            raise cluster.ConfigError([f"{field}: {wanted:g} {kind} per trial, but the Ray cluster has {have:g}: "
                                       f"allowed 0 to {have:g}"])


def connect_beside_ray(cfg: StudyConfig, storage: str, tracking_uri: str, artifact_root: str, say):
    """A local study: the MLflow store is opened while Ray starts (~4 s of MLflow imports and a new sqlite
    file's schema that ``ray.init``, mostly waiting on its processes, need not wait for).

    Returns the client and the experiment id. One thread creates the store: no two schema upgrades race.
    """
    check_tracking_uri(tracking_uri)

    def open_store():
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - MLflow's heavy imports, off the main thread

        # "Creating initial MLflow database tables...": a new store is ours to create, not news
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        client = open_client(tracking_uri)
        return client, ensure_experiment(client, cfg.name, artifact_root)

    with ThreadPoolExecutor(1, thread_name_prefix=f"{THREAD_PREFIX}store-open") as pool:  # waits for it on every path
        store = pool.submit(open_store)
        connect_ray(cfg, storage, tracking_uri, False, None, say)
        return store.result()

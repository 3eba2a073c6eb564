"""Set-up of a study run, all before any trial: checks, Ray, the MLflow parent run, the spool.

``StudySetup`` holds what a launch and a resume share; ``study.runner.StudyRunner`` runs the
stages on a set-up that has started or attached a study. Every check that can refuse a study runs before anything is started or written.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from study import cluster
from study.config import StudyConfig
from study.disk import DiskGuard, check_free_space
from study.paths import StudyDir, artifacts_root, is_remote, new_study_id, storage_root
from study.prepare import prepare, provenance
from study.signals import STOP
from study.state import StudyState, study_dir
from study.tracking.store import (
    artifact_root_for,
    check_tracking_uri,
    ensure_experiment,
    open_client,
    provenance_tags,
    resolve_tracking_uri,
    start_parent_run,
)


def local_cpus() -> int:
    """The CPUs a local Ray instance will offer (Ray's own count honours container CPU limits)."""
    try:
        from ray._private.utils import get_num_cpus

        return int(get_num_cpus())
    except Exception:  # noqa: BLE001 - a private helper: fall back to the OS count
        return os.cpu_count() or 1


class TrackingBacklog(RuntimeError):
    """The study ran, but the tracking server was still down at the end: updates wait in the journal."""


class StudySetup:
    """Checks, connection, parent run and tracking spool of one launch or resume."""

    def __init__(self, cfg: StudyConfig, quiet: bool = False, max_hours: float | None = None,
                 cluster_address: str | None = None, use_cluster: bool = False):
        self.cfg, self.quiet, self.max_hours = cfg, quiet, max_hours
        self.use_cluster, self.address = use_cluster, cluster_address
        self.tracking_uri = resolve_tracking_uri(cfg)
        self.storage = storage_root(cfg.storage_path)  # a local path or an object-store URI
        self.state: StudyState | None = None
        self.guard = DiskGuard(self.watched_paths(), cfg.min_free_gb)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    # ------------------------------------------------------------------ set-up, all before any trial
    def connect(self, make_client: bool = True) -> None:
        check_tracking_uri(self.tracking_uri)
        if self.use_cluster:
            cluster.check_cluster_settings(self.tracking_uri, self.cfg.storage_path)
            with STOP.around_ray_init():  # ray.init puts in its own SIGTERM handler, which exits at once
                cluster.connect(self.address)
            nodes = cluster.probe_storage(self.storage)
            self.say(f"cluster: {nodes} nodes, storage {self.storage} reachable from all")
        else:
            if not is_remote(self.storage):
                Path(self.storage).mkdir(parents=True, exist_ok=True)
            with STOP.around_ray_init():
                cluster.init_local()
        import ray

        for kind, wanted in (("GPU", self.cfg.resources.gpus), ("CPU", self.cfg.resources.cpus)):
            have = ray.cluster_resources().get(kind, 0.0)
            if wanted > have:
                field = f"resources.{kind.lower()}s"
                raise cluster.ConfigError([f"{field}: {wanted:g} {kind} per trial, but the Ray cluster has {have:g}: "
                                           f"allowed 0 to {have:g}"])
        if make_client:
            self.client = open_client(self.tracking_uri)

    def watched_paths(self) -> list[Path]:
        """Local paths the study writes to: each must keep ``min_free_gb`` free."""
        paths = [] if is_remote(self.storage) else [Path(self.storage)]
        if self.tracking_uri.startswith("sqlite:///"):
            paths.append(Path(self.tracking_uri.removeprefix("sqlite:///")).parent)
        return paths

    def check_local_resources(self) -> None:
        """A local study can only ask for the CPUs and GPUs this machine has; checked before Ray starts."""
        if self.use_cluster:
            return
        import torch

        for kind, wanted, have in (("gpu", self.cfg.resources.gpus, torch.cuda.device_count()),
                                   ("cpu", self.cfg.resources.cpus, local_cpus())):
            if wanted > have:
                raise cluster.ConfigError([f"resources.{kind}s: {wanted:g} {kind.upper()} per trial, but this machine "
                                           f"has {have}: allowed 0 to {have} (or --cluster for a cluster)"])

    def start(self) -> StudyState:
        self.check_local_resources()
        check_free_space(self.watched_paths(), self.cfg.min_free_gb)
        data_source, data_digest = self.prepare_data()  # fails early on missing data, before anything is written
        if self.cfg.description:
            self.say(f"{self.cfg.name}: {self.cfg.description}")
        study_id = new_study_id(self.cfg.name)
        artifact_root = artifact_root_for(self.tracking_uri, artifacts_root())
        if self.use_cluster:  # every cluster check passes before MLflow is written to
            self.connect()
            experiment_id = ensure_experiment(self.client, self.cfg.name, artifact_root)
        else:  # the local store (~4 s: MLflow's imports and a new sqlite file's schema) is set up while Ray starts
            check_tracking_uri(self.tracking_uri)

            def open_store():  # MLflow is first imported here, not before ray.init: ray.init mostly waits on its processes
                import logging

                import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - 0.6-1 s that ray.init need not wait for

                # "Creating initial MLflow database tables...": a new store is ours to create, not news
                logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

                client = open_client(self.tracking_uri)
                return client, ensure_experiment(client, self.cfg.name, artifact_root)

            with ThreadPoolExecutor(1) as pool:
                store = pool.submit(open_store)
                self.connect(make_client=False)  # one thread creates the store: no two schema upgrades race
                self.client, experiment_id = store.result()
        device = "cuda" if (self.cfg.resources.gpus > 0 and self.cfg.device != "cpu") else "cpu"
        tags = provenance_tags(self.cfg.hash(), data_source, data_digest, device)
        parent = start_parent_run(self.client, experiment_id, study_id, self.cfg.to_yaml(), tags, self.cfg.description)
        self.state = StudyState(study_id, self.cfg.name, self.cfg.to_yaml(), self.tracking_uri, experiment_id, parent)
        self.save_state()
        self.open_spool()
        self.say(f"study {study_id}: {len(self.cfg.cells())} cells, tracking {self.tracking_uri}, storage {self.storage}")
        return self.state

    def prepare_data(self) -> tuple[str, str]:
        """Every dataset of the study, downloaded (if asked) once, here, under a lock: trials only read."""
        splits = prepare([c.dataset for c in self.cfg.cells()], self.cfg.data_root, self.cfg.download, self.say)
        for each in splits:
            self.say(each.describe())
        return provenance(splits)

    def attach(self, state: StudyState) -> None:
        """Resume: reuse the study's parent run and directory."""
        self.state = state
        check_free_space(self.watched_paths(), self.cfg.min_free_gb)
        self.prepare_data()  # a fresh cluster: its trials read what the driver prepares
        self.connect()
        self.open_spool()  # first replays whatever an earlier driver could not send
        self._flush_tracking(wait=True)  # ... before the parent run is marked RUNNING again
        self.client.update_run(state.parent_run_id, status="RUNNING")
        self.client.log_text(state.parent_run_id, self.cfg.to_yaml(), f"config/resume-{int(time.time())}.yaml")
        self.say(f"resuming study {state.study_id} (tracking {self.tracking_uri}, storage {self.storage})")

    def open_spool(self) -> None:
        from study.tracking.spool import TrackingSpool
        from study.tracking.trial_runs import SPOOLS

        local = self.directory.local  # with object storage the journal of updates stays on this machine
        where = local / "tracking-spool" if local is not None else artifacts_root() / "spool" / self.state.study_id
        self.spool = TrackingSpool(self.tracking_uri, where, self.state.experiment_id, self.state.study_id,
                                   say=lambda text: print(text, file=sys.stderr, flush=True))  # even with --quiet
        SPOOLS[self.state.study_id] = self.spool  # also for trackers that Tuner.restore unpickles

    @property
    def directory(self) -> StudyDir:
        return study_dir(self.storage, self.state.study_id)

    def save_state(self) -> None:
        self.state.save(self.directory)

    def _flush_tracking(self, wait: bool) -> None:
        """Wait for the tracking server to take every update; if it stays down, say how they get there."""
        pending = self.spool.flush(timeout=5.0)
        if pending and wait:
            self.say(f"tracking: waiting up to {self.cfg.tracking_wait_s:g} s for {self.tracking_uri} to take "
                     f"{pending} spooled updates")
            pending = self.spool.flush(timeout=self.cfg.tracking_wait_s)
        if pending and not wait:  # interrupted or failed: that error is the one to show
            print(f"tracking: {pending} updates kept in {self.spool.journal} for the next --resume", file=sys.stderr)
        elif pending:
            raise TrackingBacklog(f"tracking: {pending} updates could not be sent to {self.tracking_uri}; they are "
                                  f"kept in {self.spool.journal} and sent by: python -m study.launch --resume "
                                  f"{self.state.study_id}")

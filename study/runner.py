"""The study's Tune runs: per-cell search, then the final stage of val-best configs × seeds.

Every run is recorded in the study's directory (``study.state``) so that a study interrupted by
Ctrl-C, a killed driver or its time budget can be resumed, and a finished one extended, without
losing or repeating trials: an unfinished Tune run is continued with ``Tuner.restore``; more trials
per cell start a new search run from the saved per-cell Optuna studies; more seeds run only the
final runs that MLflow does not already hold.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient
from ray import tune

from study import cluster
from study.config import StudyConfig, validate
from study.launch import artifacts_root, new_study_id, resolve_tracking_uri, storage_root
from study.progress import Progress
from study.space import CellPruningScheduler, PerCellSearcher, SnapshotOnAddScheduler, cell_fields, trial_constants
from study.state import StudyState, load_searcher_state, save_searcher, study_dir, write_deadline
from study.disk import DiskGuard, check_free_space
from study.spool import TrackingSpool
from study.tracking import (SPOOLS, TrialTracker, artifact_root_for, check_tracking_uri, ensure_experiment,
                            provenance_tags, start_parent_run)
from trainables.data import load_mnist
from trainables.tune_trainable import train_cell

log = logging.getLogger(__name__)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Checkpointing every epoch (so a crashed trial loses at most one) makes Tune snapshot often; that is intended.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
HPARAM_KEYS = ("optimizer", "lr", "loc_lr_mult", "momentum", "weight_decay", "batch_size")


class TrackingBacklog(RuntimeError):
    """The study ran, but the tracking server was still down at the end: updates wait in the journal."""


class StudyInterrupted(KeyboardInterrupt):
    """Ctrl-C: running trials were checkpointed and their runs marked KILLED; the study is resumable."""


class StudyRunner:
    def __init__(self, cfg: StudyConfig, quiet: bool = False, max_hours: float | None = None,
                 cluster_address: str | None = None, use_cluster: bool = False):
        self.cfg, self.quiet, self.max_hours = cfg, quiet, max_hours
        self.use_cluster, self.address = use_cluster, cluster_address
        self.tracking_uri = resolve_tracking_uri(cfg)
        remote = (cfg.storage_path or "").startswith("s3://")
        self.storage = cfg.storage_path if remote else storage_root(cfg.storage_path)
        self.state: StudyState | None = None
        self.guard = DiskGuard(self.watched_paths(), cfg.min_free_gb)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    # ------------------------------------------------------------------ set-up, all before any trial
    def connect(self) -> None:
        check_tracking_uri(self.tracking_uri)
        if self.use_cluster:
            cluster.check_cluster_settings(self.tracking_uri, self.cfg.storage_path)
            cluster.connect(self.address)
            nodes = cluster.probe_storage(str(self.storage))
            self.say(f"cluster: {nodes} nodes, storage {self.storage} reachable from all")
        else:
            Path(self.storage).mkdir(parents=True, exist_ok=True)
            cluster.init_local()
        import ray

        for kind, wanted in (("GPU", self.cfg.resources.gpus), ("CPU", self.cfg.resources.cpus)):
            have = ray.cluster_resources().get(kind, 0.0)
            if wanted > have:
                field = f"resources.{kind.lower()}s"
                raise cluster.ConfigError([f"{field}: {wanted:g} {kind} per trial, but the Ray cluster has {have:g}: "
                                           f"allowed 0 to {have:g}"])
        self.client = MlflowClient(self.tracking_uri)

    def watched_paths(self) -> list[Path]:
        """Local paths the study writes to: each must keep ``min_free_gb`` free."""
        paths = [] if str(self.storage).startswith("s3://") else [Path(self.storage)]
        if self.tracking_uri.startswith("sqlite:///"):
            paths.append(Path(self.tracking_uri.removeprefix("sqlite:///")).parent)
        return paths

    def check_local_resources(self) -> None:
        """A local study can only ask for the CPUs and GPUs this machine has; checked before Ray starts."""
        if self.use_cluster:
            return
        import torch

        for kind, wanted, have in (("gpu", self.cfg.resources.gpus, torch.cuda.device_count()),
                                   ("cpu", self.cfg.resources.cpus, os.cpu_count() or 1)):
            if wanted > have:
                raise cluster.ConfigError([f"resources.{kind}s: {wanted:g} {kind.upper()} per trial, but this machine "
                                           f"has {have}: allowed 0 to {have} (or --cluster for a cluster)"])

    def start(self) -> StudyState:
        self.check_local_resources()
        check_free_space(self.watched_paths(), self.cfg.min_free_gb)
        splits = load_mnist(self.cfg.data_root, self.cfg.download)  # fails early on missing data
        self.say(splits.describe())
        if self.cfg.description:
            self.say(f"{self.cfg.name}: {self.cfg.description}")
        study_id = new_study_id(self.cfg.name)
        artifact_root = artifact_root_for(self.tracking_uri, artifacts_root())
        if self.use_cluster:  # every cluster check passes before MLflow is written to
            self.connect()
            experiment_id = ensure_experiment(self.client, self.cfg.name, artifact_root)
        else:  # the local store's schema (~1.6 s for a new sqlite file) is set up while Ray starts
            check_tracking_uri(self.tracking_uri)
            with ThreadPoolExecutor(1) as pool:
                experiment = pool.submit(ensure_experiment, MlflowClient(self.tracking_uri), self.cfg.name,
                                         artifact_root)
                self.connect()
                experiment_id = experiment.result()
        device = "cuda" if (self.cfg.resources.gpus > 0 and self.cfg.device != "cpu") else "cpu"
        tags = provenance_tags(self.cfg.hash(), splits.source, splits.digest, device)
        parent = start_parent_run(self.client, experiment_id, study_id, self.cfg.to_yaml(), tags, self.cfg.description)
        self.state = StudyState(study_id, self.cfg.name, self.cfg.to_yaml(), self.tracking_uri, experiment_id, parent)
        self.save_state()
        self.open_spool()
        self.say(f"study {study_id}: {len(self.cfg.cells())} cells, tracking {self.tracking_uri}, storage {self.storage}")
        return self.state

    def attach(self, state: StudyState) -> None:
        """Resume: reuse the study's parent run and directory."""
        self.state = state
        check_free_space(self.watched_paths(), self.cfg.min_free_gb)
        self.connect()
        self.open_spool()  # first replays whatever an earlier driver could not send
        self.client.update_run(state.parent_run_id, status="RUNNING")
        self.client.log_text(state.parent_run_id, self.cfg.to_yaml(), f"config/resume-{int(time.time())}.yaml")
        self.say(f"resuming study {state.study_id} (tracking {self.tracking_uri}, storage {self.storage})")

    def open_spool(self) -> None:
        remote = str(self.storage).startswith("s3://")
        where = artifacts_root() / "spool" / self.state.study_id if remote else self.directory / "tracking-spool"
        self.spool = TrackingSpool(self.tracking_uri, where, self.state.experiment_id, self.state.study_id,
                                   say=lambda text: print(text, file=sys.stderr, flush=True))  # even with --quiet
        SPOOLS[self.state.study_id] = self.spool  # also for trackers that Tuner.restore unpickles

    @property
    def directory(self) -> Path:
        return study_dir(Path(self.storage), self.state.study_id)

    def save_state(self) -> None:
        self.state.save(self.directory)

    # ------------------------------------------------------------------ Tune plumbing
    def _trainable(self):
        return tune.with_resources(train_cell, {"cpu": self.cfg.resources.cpus, "gpu": self.cfg.resources.gpus})

    def _run_config(self, name: str, callbacks: list) -> tune.RunConfig:
        return tune.RunConfig(name=name, storage_path=str(self.directory), callbacks=callbacks, verbose=0,
                              checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                              failure_config=tune.FailureConfig(max_failures=2))

    def _tracker(self, searcher=None) -> TrialTracker:
        return TrialTracker(self.spool, self.state.parent_run_id, self.state.study_id, searcher)

    def _restorable(self, name: str) -> bool:
        """An unfinished Tune run can be continued only if its saved state holds trials."""
        states = sorted((self.directory / name).glob("experiment_state-*.json"))
        if not states:
            return False
        try:
            return bool(json.loads(states[-1].read_text()).get("trial_data"))
        except (OSError, ValueError):
            return False

    def _restore(self, name: str):
        path = self.directory / name
        self.say(f"continuing Tune run {name} from {path}")
        return tune.Tuner.restore(str(path), trainable=self._trainable(), resume_unfinished=True,
                                  resume_errored=True, restart_errored=False)

    # ------------------------------------------------------------------ the search stage
    def search(self) -> PerCellSearcher:
        runs, complete = self.state.search_runs, self.state.search_complete
        if runs and not complete[-1]:
            if self._restorable(runs[-1]):
                self._restore(runs[-1]).fit()
                self._mark_search_done()
            else:  # killed before Tune saved any trial: nothing to continue, start a new run
                complete[-1] = True
                self.save_state()
        searcher = PerCellSearcher(self.cfg, self.directory)
        saved = load_searcher_state(self.directory)
        if saved is not None:
            searcher.continue_with(saved, self.cfg)
        if searcher.remaining() and not searcher.budget_exhausted():
            name = f"search-{len(runs) + 1}"
            runs.append(name)
            complete.append(False)
            self.save_state()
            callbacks = [self._tracker(searcher), self.guard]
            if not self.quiet:
                callbacks.append(Progress("search", list(searcher.cells), searcher.remaining(), self.cfg.epochs))
            tuner = tune.Tuner(
                self._trainable(), param_space={},
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=CellPruningScheduler(searcher),
                                            metric="val_error", mode="min", num_samples=searcher.remaining(),
                                            max_concurrent_trials=self.cfg.max_concurrent_trials, reuse_actors=True),
                run_config=self._run_config(name, callbacks))
            tuner.fit()
            self._mark_search_done()
            save_searcher(self.directory, searcher)
        final = PerCellSearcher(self.cfg, self.directory)
        final.continue_with(load_searcher_state(self.directory), self.cfg)
        return final

    def _mark_search_done(self) -> None:
        state = load_searcher_state(self.directory)
        if state and state["live"]:  # trials still in flight: Tune was interrupted
            raise StudyInterrupted()
        self.state.search_complete[-1] = True
        self.save_state()

    # ------------------------------------------------------------------ the final stage
    def final_configs(self, searcher: PerCellSearcher) -> list[dict]:
        best = searcher.best_per_cell()
        configs = []
        for key, cell in searcher.cells.items():
            if key not in best:
                self.say(f"warning: {key} has no completed search trial (all diverged, failed or pruned): no final runs")
                continue
            for seed in self.cfg.final_seeds:
                configs.append({**trial_constants(self.cfg, "final"), **cell_fields(cell), "seed": seed,
                                "selected_from": best[key]["trial_number"], **best[key]["hparams"]})
        return configs

    def _already_done(self, configs: list[dict]) -> list[dict]:
        """Final runs MLflow already holds (same cell, seed and hyper-parameters, completed) are not rerun."""
        if not self.state.final_runs:
            return configs  # no final run yet: nothing to look up (and no need for the server right now)
        self.spool.flush()
        runs = self.client.search_runs([self.state.experiment_id], f"tags.study_id = '{self.state.study_id}' and "
                                       f"tags.stage = 'final' and tags.outcome = 'completed'", max_results=5000)
        done = {(r.data.tags["cell"], r.data.tags["seed"], tuple(r.data.params.get(k) for k in HPARAM_KEYS))
                for r in runs}
        return [c for c in configs if (c["cell"], str(c["seed"]), tuple(str(c[k]) for k in HPARAM_KEYS)) not in done]

    def final(self, searcher: PerCellSearcher) -> None:
        runs, complete = self.state.final_runs, self.state.final_complete
        if runs and not complete[-1]:
            if self._restorable(runs[-1]):
                self._check_final(self._restore(runs[-1]).fit())
            else:
                complete[-1] = True
                self.save_state()
        todo = self._already_done(self.final_configs(searcher))
        if not todo:
            return
        name = f"final-{len(runs) + 1}"
        runs.append(name)
        complete.append(False)
        self.save_state()
        callbacks = [self._tracker(), self.guard]
        if not self.quiet:
            cells = list(dict.fromkeys(c["cell"] for c in todo))
            callbacks.append(Progress("final", cells, len(todo), todo[0]["epochs"]))
        tuner = tune.Tuner(self._trainable(), param_space={"spec": tune.grid_search(todo)},
                           tune_config=tune.TuneConfig(max_concurrent_trials=self.cfg.max_concurrent_trials,
                                                       reuse_actors=True, scheduler=SnapshotOnAddScheduler()),
                           run_config=self._run_config(name, callbacks))
        self._check_final(tuner.fit())

    def _check_final(self, results) -> None:
        if results.num_terminated + results.num_errors < len(results):
            raise StudyInterrupted()
        self.state.final_complete[-1] = True
        self.save_state()

    # ------------------------------------------------------------------ whole study
    def execute(self) -> str:
        started = time.monotonic()
        write_deadline(self.directory, self.max_hours)
        status, state_status, ran_through = "FAILED", "failed", False
        try:
            searcher = self.search()
            if searcher.budget_exhausted():
                status, state_status = "FINISHED", "budget-exhausted"
                self.say(f"time budget of {self.max_hours:g} h reached: no new trials were scheduled and the final "
                         f"stage was not started; continue with --resume {self.state.study_id}")
            else:
                self.final(searcher)
                status, state_status = "FINISHED", "finished"
            self._summarise(searcher, time.monotonic() - started)
            ran_through = True
        except KeyboardInterrupt:
            status, state_status = "KILLED", "interrupted"
            if self.guard.tripped is not None:
                raise self.guard.error(self.state.study_id) from None
            print(f"study {self.state.study_id} interrupted: running trials were checkpointed; "
                  f"resume with: python -m study.launch --resume {self.state.study_id}", file=sys.stderr, flush=True)
            raise StudyInterrupted() from None
        finally:
            self.state.status = state_status
            self.save_state()
            self.spool.submit("end", run_id=self.state.parent_run_id, status=status,
                              tags={"study_status": state_status})
            self._flush_tracking(wait=ran_through)
        if not self.quiet:
            from study.report import build_report

            build_report(self.tracking_uri, self.state.study_id)
        return self.state.study_id

    def _summarise(self, searcher: PerCellSearcher, seconds: float) -> None:
        counts = searcher.counts()
        totals = {s: sum(c[s] for c in counts.values()) for s in ("complete", "pruned", "fail")}
        metrics = {"search_trials_completed": totals["complete"], "search_trials_pruned": totals["pruned"],
                   "search_trials_failed": totals["fail"], "wall_s": seconds}
        now, step = int(time.time() * 1000), len(self.state.search_runs)
        self.spool.submit("metrics", run_id=self.state.parent_run_id,
                          metrics=[[k, float(v), now, step] for k, v in metrics.items()])

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


def config_of(state: StudyState, changes: dict) -> StudyConfig:
    """The study's saved config with the allowed extensions applied (more trials, seeds, budget)."""
    data = yaml.safe_load(state.config_yaml)
    data.update(changes)
    return validate(data)

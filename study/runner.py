"""The study's two Tune runs: the per-cell search, then the final stage of val-best configs × seeds."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import ray
from mlflow.tracking import MlflowClient
from ray import tune

from study.config import ConfigError, StudyConfig
from study.launch import artifacts_root, new_study_id, resolve_tracking_uri
from study.progress import Progress
from study.space import CellPruningScheduler, PerCellSearcher, cell_fields, trial_constants
from study.tracking import (TrialTracker, artifact_root_for, check_tracking_uri, ensure_experiment,
                            provenance_tags, start_parent_run)
from trainables.data import load_mnist
from trainables.tune_trainable import train_cell

log = logging.getLogger(__name__)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Checkpointing every epoch (so a crashed trial loses at most one) makes Tune snapshot often; that is intended.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


class StudyRunner:
    def __init__(self, cfg: StudyConfig, quiet: bool = False, study_id: str | None = None):
        self.cfg, self.quiet = cfg, quiet
        self.study_id = study_id or new_study_id(cfg.name)
        self.tracking_uri = resolve_tracking_uri(cfg)
        self.storage = Path(cfg.storage_path or artifacts_root() / "tune").expanduser().resolve()
        self.client: MlflowClient | None = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ set-up, all before any trial
    def prepare(self) -> None:
        check_tracking_uri(self.tracking_uri)
        splits = load_mnist(self.cfg.data_root, self.cfg.download)  # fails early on missing data
        if not self.quiet:
            print(splits.describe(), flush=True)
            if self.cfg.description:
                print(f"{self.cfg.name}: {self.cfg.description}", flush=True)
        self.data = splits
        self.storage.mkdir(parents=True, exist_ok=True)
        if not ray.is_initialized():
            ray.init(logging_level=logging.WARNING, log_to_driver=False, include_dashboard=False,
                     configure_logging=True)
        gpus = ray.cluster_resources().get("GPU", 0.0)
        if self.cfg.resources.gpus > gpus:
            raise ConfigError([f"resources.gpus: {self.cfg.resources.gpus:g} GPU per trial, but the Ray cluster "
                               f"has {gpus:g}: allowed 0 to {gpus:g}"])
        cpus = ray.cluster_resources().get("CPU", 0.0)
        if self.cfg.resources.cpus > cpus:
            raise ConfigError([f"resources.cpus: {self.cfg.resources.cpus:g} CPUs per trial, but the Ray cluster "
                               f"has {cpus:g}: allowed up to {cpus:g}"])
        self.client = MlflowClient(self.tracking_uri)
        self.experiment_id = ensure_experiment(self.client, self.cfg.name,
                                               artifact_root_for(self.tracking_uri, artifacts_root()))
        device = "cuda" if (self.cfg.resources.gpus > 0 and self.cfg.device != "cpu") else "cpu"
        tags = provenance_tags(self.cfg.hash(), splits.source, splits.digest, device)
        self.parent_run_id = start_parent_run(self.client, self.experiment_id, self.study_id, self.cfg.to_yaml(),
                                              tags, self.cfg.description)
        if not self.quiet:
            print(f"study {self.study_id}: {len(self.cfg.cells())} cells, tracking {self.tracking_uri}, "
                  f"storage {self.storage}", flush=True)

    def _run_config(self, stage: str, callbacks: list) -> tune.RunConfig:
        return tune.RunConfig(
            name=f"{self.study_id}-{stage}", storage_path=str(self.storage), callbacks=callbacks, verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=2),
        )

    def _trainable(self):
        resources = {"cpu": self.cfg.resources.cpus, "gpu": self.cfg.resources.gpus}
        return tune.with_resources(train_cell, resources)

    # ------------------------------------------------------------------ the two stages
    def search(self) -> PerCellSearcher:
        searcher = PerCellSearcher(self.cfg)
        tracker = TrialTracker(self.tracking_uri, self.experiment_id, self.parent_run_id, self.study_id,
                               pruned=searcher.pruned)
        callbacks = [tracker]
        if not self.quiet:
            callbacks.append(Progress("search", list(searcher.cells), searcher.total_trials, self.cfg.epochs))
        tuner = tune.Tuner(
            self._trainable(), param_space={},
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=CellPruningScheduler(searcher),
                                        metric="val_error", mode="min", num_samples=searcher.total_trials,
                                        max_concurrent_trials=self.cfg.max_concurrent_trials, reuse_actors=True),
            run_config=self._run_config("search", callbacks),
        )
        tuner.fit()
        return searcher

    def final_configs(self, searcher: PerCellSearcher) -> list[dict]:
        best = searcher.best_per_cell()
        configs = []
        for key, cell in searcher.cells.items():
            if key not in best:
                print(f"warning: {key} has no completed search trial (all diverged, failed or pruned): "
                      f"no final runs", flush=True)
                continue
            for seed in self.cfg.final_seeds:
                configs.append({**trial_constants(self.cfg, "final"), **cell_fields(cell), "seed": seed,
                                "selected_from": best[key]["trial_number"], "search_val_error": best[key]["val_error"],
                                **best[key]["hparams"]})
        return configs

    def final(self, configs: list[dict]) -> None:
        if not configs:
            return
        tracker = TrialTracker(self.tracking_uri, self.experiment_id, self.parent_run_id, self.study_id)
        callbacks = [tracker]
        if not self.quiet:
            cells = list(dict.fromkeys(c["cell"] for c in configs))
            callbacks.append(Progress("final", cells, len(configs), configs[0]["epochs"]))
        tuner = tune.Tuner(
            self._trainable(), param_space={"spec": tune.grid_search(configs)},
            tune_config=tune.TuneConfig(max_concurrent_trials=self.cfg.max_concurrent_trials, reuse_actors=True),
            run_config=self._run_config("final", callbacks),
        )
        tuner.fit()

    # ------------------------------------------------------------------ whole study
    def run(self) -> str:
        started = time.monotonic()
        self.prepare()
        status = "FAILED"
        try:
            searcher = self.search()
            self.timings["search_s"] = time.monotonic() - started
            self.final(self.final_configs(searcher))
            self.timings["total_s"] = time.monotonic() - started
            self._summarise(searcher)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self.client.set_terminated(self.parent_run_id, status)
        if not self.quiet:
            from study.report import build_report

            build_report(self.tracking_uri, self.study_id)
        return self.study_id

    def _summarise(self, searcher: PerCellSearcher) -> None:
        counts = searcher.counts()
        totals = {s: sum(c[s] for c in counts.values()) for s in ("complete", "pruned", "fail")}
        metrics = {"search_trials_completed": totals["complete"], "search_trials_pruned": totals["pruned"],
                   "search_trials_failed": totals["fail"], "final_runs": len(self.cfg.final_seeds) * len(
                       searcher.best_per_cell()), **{f"wall_{k}": v for k, v in self.timings.items()}}
        for key, value in metrics.items():
            self.client.log_metric(self.parent_run_id, key, float(value))

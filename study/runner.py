"""The study's Tune runs: per-cell search, then the final stage of val-best configs × seeds.

Every run is recorded in the study's directory (``study.state``) so that a study interrupted by
Ctrl-C, a killed driver or its time budget can be resumed, and a finished one extended, without
losing or repeating trials: an unfinished Tune run is continued with ``Tuner.restore``; more trials
per cell start a new search run from the saved per-cell Optuna studies; more seeds run only the
final runs that MLflow does not already hold.
"""

from __future__ import annotations

import json
import os
import sys
import time

import yaml
from ray import tune

from study.config import StudyConfig, validate
from study.disk import DiskGuard
from study.progress import Progress
from study.search.schedulers import CellPruningScheduler, SnapshotOnAddScheduler
from study.search.searcher import PerCellSearcher
from study.setup import StudySetup
from study.signals import fit
from study.state import StudyState, write_deadline
from study.tracking.trial_runs import TrialTracker, completed_finals
from study.trial import train_cell
from study.trial_schema import HPARAM_KEYS, final_key

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Checkpointing every epoch (so a crashed trial loses at most one) makes Tune snapshot often; that is intended.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


class StudyInterrupted(KeyboardInterrupt):
    """Ctrl-C: running trials were checkpointed and their runs marked KILLED; the study is resumable."""


class StudyRunner:
    """The search stage, the final stage and the whole study of a set-up that has started or attached one."""

    def __init__(self, setup: StudySetup):
        if setup.state is None:
            raise RuntimeError("StudyRunner needs a started or attached StudySetup")
        self.setup, self.cfg, self.state = setup, setup.cfg, setup.state

    # ------------------------------------------------------------------ Tune plumbing
    def _trainable(self):
        return tune.with_resources(train_cell, {"cpu": self.cfg.resources.cpus, "gpu": self.cfg.resources.gpus})

    def _run_config(self, name: str, callbacks: list) -> tune.RunConfig:
        # Tune's newer console output prints a config box, the run's folder and a TensorBoard hint even at
        # verbose=0; its classic reporter (RAY_AIR_NEW_OUTPUT=0, Ray's documented switch) prints nothing at 0:
        # our progress lines are the study's output. A user's own setting is kept.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        return tune.RunConfig(name=name, storage_path=self.setup.directory.uri, callbacks=callbacks, verbose=0,
                              checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                              failure_config=tune.FailureConfig(max_failures=2))

    def _tracker(self, searcher=None) -> TrialTracker:
        return TrialTracker(self.setup.spool, self.state.parent_run_id, self.state.study_id, searcher)

    def _restorable(self, name: str) -> bool:
        """An unfinished Tune run can be continued only if its saved state holds trials."""
        states = [f for f in self.setup.directory.listdir(name) if f.startswith("experiment_state-") and f.endswith(".json")]
        if not states:
            return False
        try:
            return bool(json.loads(self.setup.directory.read_text(f"{name}/{max(states)}")).get("trial_data"))
        except (OSError, ValueError):
            return False

    def _restore(self, name: str):
        path = f"{self.setup.directory.uri}/{name}"
        self.setup.say(f"continuing Tune run {name} from {path}")
        return tune.Tuner.restore(path, trainable=self._trainable(), resume_unfinished=True,
                                  resume_errored=True, restart_errored=False)

    # ------------------------------------------------------------------ the search stage
    def search(self) -> PerCellSearcher:
        runs, complete = self.state.search_runs, self.state.search_complete
        if runs and not complete[-1]:
            if self._restorable(runs[-1]):
                results = fit(self._restore(runs[-1]))  # Tune restores the searcher's run bookkeeping
                self._mark_search_done(results, PerCellSearcher(self.cfg, self.setup.directory))
            else:  # killed before Tune saved any trial: nothing to continue, start a new run
                complete[-1] = True
                self.setup.save_state()
        searcher = PerCellSearcher(self.cfg, self.setup.directory)
        searcher.start_new_run()  # trials of an earlier run that never ended are lost, not counted
        if searcher.remaining() and not searcher.budget_exhausted():
            searcher.finals_done |= self._finals_in_mlflow()  # a later search run must not repeat them early
            name = f"search-{len(runs) + 1}"
            runs.append(name)
            complete.append(False)
            self.setup.save_state()
            callbacks = [self._tracker(searcher), self.setup.guard]
            samples = searcher.remaining() + searcher.finals_bound()  # an upper bound: the searcher ends the run
            if not self.setup.quiet:
                stage = "search + final" if searcher.finals_bound() else "search"
                callbacks.append(Progress(stage, list(searcher.cells), samples, self.cfg.epochs))
            tuner = tune.Tuner(
                self._trainable(), param_space={},
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=CellPruningScheduler(searcher),
                                            metric="val_error", mode="min", num_samples=samples,
                                            max_concurrent_trials=self.cfg.max_concurrent_trials, reuse_actors=True),
                run_config=self._run_config(name, callbacks))
            self._mark_search_done(fit(tuner), searcher)
        return PerCellSearcher(self.cfg, self.setup.directory)

    def _mark_search_done(self, results, searcher: PerCellSearcher) -> None:
        """A search run is done when Tune ended every trial and Optuna holds no trial still running."""
        if results.num_terminated + results.num_errors < len(results) or searcher.in_flight():
            raise StudyInterrupted()  # Tune was interrupted: the trials in flight resume with the run
        self.state.search_complete[-1] = True
        self.setup.save_state()

    # ------------------------------------------------------------------ the final stage
    def final_configs(self, searcher: PerCellSearcher, warn: bool = True) -> list[dict]:
        configs, best = [], searcher.best_per_cell()
        for key in searcher.cells:
            cell_configs = searcher.final_configs(key, best)
            if not cell_configs and self.cfg.final_seeds and warn:
                self.setup.say(f"warning: {key} has no completed search trial (all diverged, failed or pruned): no final runs")
            configs += cell_configs
        return configs

    def _final_todo(self, searcher: PerCellSearcher, warn: bool = False) -> list[dict]:
        return self._already_done(self.final_configs(searcher, warn), searcher)

    def _finals_in_mlflow(self) -> set[tuple]:
        """Final runs MLflow holds as completed; looked up only once a final stage has run."""
        if not self.state.final_runs and not (self.cfg.overlap_final and self.state.search_runs):
            return set()  # no final run can have started yet: nothing to look up (and no need for the server)
        self.setup._flush_tracking(wait=True)  # what MLflow holds must be up to date; raises if it stays down
        runs = completed_finals(self.setup.client, self.state.experiment_id, self.state.study_id)
        return {final_key({"cell": r.data.tags["cell"], "seed": r.data.tags["seed"],
                           **{k: r.data.params.get(k) for k in HPARAM_KEYS}}) for r in runs}

    def _already_done(self, configs: list[dict], searcher: PerCellSearcher) -> list[dict]:
        """Final runs that completed — early in a search run, or in MLflow from an earlier final stage — are not rerun."""
        done = searcher.finals_done | self._finals_in_mlflow()
        return [c for c in configs if final_key(c) not in done]

    def final(self, searcher: PerCellSearcher) -> None:
        runs, complete = self.state.final_runs, self.state.final_complete
        if runs and not complete[-1]:
            if self._restorable(runs[-1]):
                self._check_final(fit(self._restore(runs[-1])))
            else:
                complete[-1] = True
                self.setup.save_state()
        todo = self._final_todo(searcher, warn=True)
        if not todo:
            return
        name = f"final-{len(runs) + 1}"
        runs.append(name)
        complete.append(False)
        self.setup.save_state()
        callbacks = [self._tracker(), self.setup.guard]
        if not self.setup.quiet:
            cells = list(dict.fromkeys(c["cell"] for c in todo))
            callbacks.append(Progress("final", cells, len(todo), todo[0]["epochs"]))
        tuner = tune.Tuner(self._trainable(), param_space={"spec": tune.grid_search(todo)},
                           tune_config=tune.TuneConfig(max_concurrent_trials=self.cfg.max_concurrent_trials,
                                                       reuse_actors=True, scheduler=SnapshotOnAddScheduler()),
                           run_config=self._run_config(name, callbacks))
        self._check_final(fit(tuner))

    def _check_final(self, results) -> None:
        if results.num_terminated + results.num_errors < len(results):
            raise StudyInterrupted()
        self.state.final_complete[-1] = True
        self.setup.save_state()

    # ------------------------------------------------------------------ whole study
    def execute(self) -> str:
        started = time.monotonic()
        write_deadline(self.setup.directory, self.setup.max_hours)
        status, state_status, ran_through = "FAILED", "failed", False
        try:
            searcher = self.search()
            self._raise_if_disk_short()
            if searcher.budget_exhausted() and (searcher.remaining() or self._final_todo(searcher)):
                status, state_status = "FINISHED", "budget-exhausted"
                budget = f"of {self.setup.max_hours:g} h " if self.setup.max_hours is not None else ""  # a deadline file set by hand
                self.setup.say(f"time budget {budget}reached: no new trial (search or final) was started; "
                         f"continue with --resume {self.state.study_id}")
            else:
                self.final(searcher)
                self._raise_if_disk_short()
                status, state_status = "FINISHED", "finished"
            self._summarise(searcher, time.monotonic() - started)
            ran_through = True
        except KeyboardInterrupt:
            status, state_status = "KILLED", "interrupted"
            if self.setup.guard.tripped is not None:
                raise self.setup.guard.error(self.state.study_id) from None
            print(f"study {self.state.study_id} interrupted: running trials were checkpointed; "
                  f"resume with: python -m study.launch --resume {self.state.study_id}", file=sys.stderr, flush=True)
            raise StudyInterrupted() from None
        finally:
            self.state.status = state_status
            self.setup.save_state()
            self.setup.spool.submit("end", run_id=self.state.parent_run_id, status=status,
                              tags={"study_status": state_status})
            self.setup._flush_tracking(wait=ran_through)
        if not self.setup.quiet:
            from study.report.build import build_report

            build_report(self.setup.tracking_uri, self.state.study_id)
        return self.state.study_id

    def _raise_if_disk_short(self) -> None:
        """The guard tripped on a stage's very last result (nothing left to interrupt): still stop."""
        if DiskGuard.tripped is not None:
            raise KeyboardInterrupt

    def _summarise(self, searcher: PerCellSearcher, seconds: float) -> None:
        counts = searcher.counts()
        totals = {s: sum(c[s] for c in counts.values()) for s in ("complete", "pruned", "fail")}
        metrics = {"search_trials_completed": totals["complete"], "search_trials_pruned": totals["pruned"],
                   "search_trials_failed": totals["fail"], "wall_s": seconds}
        now, step = int(time.time() * 1000), len(self.state.search_runs)
        self.setup.spool.submit("metrics", run_id=self.state.parent_run_id,
                          metrics=[[k, float(v), now, step] for k, v in metrics.items()])


def config_of(state: StudyState, changes: dict) -> StudyConfig:
    """The study's saved config with ``changes`` (field or dotted ``a.b`` keys) applied, validated again."""
    from study.config import set_path

    data = yaml.safe_load(state.config_yaml)
    for key, value in changes.items():
        set_path(data, key, value)
    return validate(data)

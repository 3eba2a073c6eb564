"""One study's driver: start (or attach to) a study, search, final stage, report, close.

``StudyDriver`` owns everything a study's driver holds — the config, the record in the storage
directory (``study.state``), the MLflow client and spool, the disk guard — for one launch or resume;
``study.api`` runs it (``run``, ``resume``) and ``python -m study.launch`` is their command line.

Every stage is recorded in the study's directory so that a study interrupted by Ctrl-C, a killed
driver or its time budget can be resumed, and a finished one extended, without losing or repeating
trials: an unfinished Tune run is continued with ``Tuner.restore``; more trials per cell start a new
search run from the saved per-cell Optuna studies; more seeds run only the final runs that MLflow
does not already hold.
"""

from __future__ import annotations

import sys
import time

from ray import tune

from study import startup, tune_runs
from study.config import StudyConfig
from study.disk import DiskGuard, check_free_space
from study.paths import StudyDir, artifacts_root, new_study_id, storage_root
from study.progress import Progress
from study.search.record import close_record, flush_record
from study.search.schedulers import CellPruningScheduler, SnapshotOnAddScheduler
from study.search.searcher import PerCellSearcher
from study.search.segments import RecordConflict
from study.signals import fit
from study.state import StudyState, StudyStatus, study_dir, write_deadline
from study.tracking.contract import Stage, Tag, best_tags, completed_finals
from study.tracking.store import artifact_root_for, ensure_experiment, open_client, provenance_tags, resolve_tracking_uri
from study.tracking.trial_runs import TrialTracker
from study.trial import train_cell
from study.trial_schema import HPARAM_KEYS, final_key
from trainables.train_config import planned_device


class StudyInterrupted(KeyboardInterrupt):
    """Ctrl-C: running trials were checkpointed and their runs marked KILLED; the study is resumable."""


class TrackingBacklog(RuntimeError):
    """The study ran, but the tracking server was still down at the end: updates wait in the journal."""


class StudyDriver:
    """The lifecycle of one launch or resume: ``start`` or ``attach`` → ``execute`` (search → final → report).

    ``trainable`` is the Tune function each trial runs (the product's ``study.trial.train_cell``; the
    driver benchmark passes its load generator, and ``callbacks`` its meter). ``quiet`` silences the
    progress, ``report`` builds the report at the end.
    """

    def __init__(self, cfg: StudyConfig, quiet: bool = False, report: bool = True, max_hours: float | None = None,
                 address: str | None = None, use_cluster: bool = False, trainable=train_cell, callbacks=()):
        self.cfg, self.quiet, self.report, self.max_hours = cfg, quiet, report, max_hours
        self.use_cluster, self.address, self.trainable, self.extra_callbacks = use_cluster, address, trainable, callbacks
        self.tracking_uri = resolve_tracking_uri(cfg)
        self.storage = storage_root(cfg.storage_path)  # a local path or an object-store URI
        self.state: StudyState | None = None
        self.spool = None
        self.guard = DiskGuard(self.watched_paths(), cfg.min_free_gb)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def watched_paths(self):
        return startup.watched_paths(self.storage, self.tracking_uri)

    @property
    def directory(self) -> StudyDir:
        return study_dir(self.storage, self.state.study_id)

    def save_state(self) -> None:
        self.state.save(self.directory)

    # ------------------------------------------------------------------ start or attach, all before any trial
    def start(self) -> StudyState:
        """A new study: every check, then Ray, the MLflow parent run, the study's record and the spool."""
        if not self.use_cluster:
            startup.check_local_resources(self.cfg)
        check_free_space(self.watched_paths(), self.cfg.min_free_gb)
        data_source, data_digest = startup.prepare_data(self.cfg, self.say)  # missing data fails before any write
        if self.cfg.description:
            self.say(f"{self.cfg.name}: {self.cfg.description}")
        study_id = new_study_id(self.cfg.name)
        artifact_root = artifact_root_for(self.tracking_uri, artifacts_root())
        if self.use_cluster:  # every cluster check passes before MLflow is written to
            startup.connect_ray(self.cfg, self.storage, self.tracking_uri, True, self.address, self.say)
            self.client = open_client(self.tracking_uri)
            experiment_id = ensure_experiment(self.client, self.cfg.name, artifact_root)
        else:
            self.client, experiment_id = startup.connect_beside_ray(self.cfg, self.storage, self.tracking_uri,
                                                                    artifact_root, self.say)
        from study.tracking.store import start_parent_run

        device = planned_device(self.cfg.device, self.cfg.resources.gpus)
        tags = provenance_tags(self.cfg.hash(), data_source, data_digest, device)
        parent = start_parent_run(self.client, experiment_id, study_id, self.cfg.to_yaml(), tags, self.cfg.description)
        self.state = StudyState(study_id, self.cfg.name, self.cfg.to_yaml(), self.tracking_uri, experiment_id, parent)
        self.save_state()
        self.open_spool()
        self.say(f"study {study_id}: {len(self.cfg.cells())} cells, tracking {self.tracking_uri}, storage {self.storage}")
        return self.state

    def attach(self, state: StudyState) -> None:
        """Resume: reuse the study's parent run and directory (``record_config`` then makes an extension a fact)."""
        self.state = state
        check_free_space(self.watched_paths(), self.cfg.min_free_gb)
        startup.prepare_data(self.cfg, self.say)  # a fresh cluster: its trials read what the driver prepares
        startup.connect_ray(self.cfg, self.storage, self.tracking_uri, self.use_cluster, self.address, self.say)
        self.client = open_client(self.tracking_uri)
        self.open_spool()  # first replays whatever an earlier driver could not send
        self.flush_tracking(wait=True)  # ... before the parent run is marked RUNNING again
        self.client.update_run(state.parent_run_id, status="RUNNING")
        self.client.log_text(state.parent_run_id, self.cfg.to_yaml(), f"config/resume-{int(time.time())}.yaml")
        self.say(f"resuming study {state.study_id} (tracking {self.tracking_uri}, storage {self.storage})")

    def record_config(self) -> None:
        """The config this driver runs with becomes the study's: an interrupted extension resumes extended."""
        self.state.config_yaml, self.state.tracking_uri = self.cfg.to_yaml(), self.tracking_uri
        self.save_state()

    def open_spool(self) -> None:
        from study.tracking.spool import TrackingSpool
        from study.tracking.trial_runs import SPOOLS

        local = self.directory.local  # with object storage the journal of updates stays on this machine
        where = local / "tracking-spool" if local is not None else artifacts_root() / "spool" / self.state.study_id
        self.spool = TrackingSpool(self.tracking_uri, where, self.state.experiment_id, self.state.study_id,
                                   say=lambda text: print(text, file=sys.stderr, flush=True))  # even with --quiet
        SPOOLS[self.state.study_id] = self.spool  # also for trackers that Tuner.restore unpickles

    def flush_tracking(self, wait: bool) -> None:
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

    # ------------------------------------------------------------------ Tune plumbing
    def _tune_trainable(self):
        return tune_runs.with_resources(self.trainable, self.cfg.resources.cpus, self.cfg.resources.gpus)

    def _continue(self, name: str):
        """The unfinished Tune run ``name`` continued, or None when it saved no trial (nothing to continue)."""
        if not tune_runs.restorable(self.directory, name):
            return None
        self.say(f"continuing Tune run {name} from {self.directory.uri}/{name}")
        return fit(tune_runs.restore(self.directory, name, self._tune_trainable()))

    def _new_run(self, runs: list, complete: list, kind: str) -> str:
        name = f"{kind}-{len(runs) + 1}"
        runs.append(name)
        complete.append(False)
        self.save_state()
        return name

    def _callbacks(self, searcher, stage: str, cells: list, samples: int) -> list:
        callbacks = [TrialTracker(self.spool, self.state.parent_run_id, self.state.study_id, searcher), self.guard,
                     *self.extra_callbacks]
        if not self.quiet:
            callbacks.append(Progress(stage, cells, samples, self.cfg.epochs))
        return callbacks

    def _stage_done(self, results, complete: list, in_flight: bool = False) -> None:
        """A Tune run is done when it ended every trial (and, for a search, Optuna holds none still running)."""
        if results.num_terminated + results.num_errors < len(results) or in_flight:
            raise StudyInterrupted()  # Tune was interrupted: the trials in flight resume with the run
        complete[-1] = True
        self.save_state()

    # ------------------------------------------------------------------ the search stage
    def search(self) -> PerCellSearcher:
        """Continue an unfinished search run, then start one for the trials still wanted; one searcher per run."""
        runs, complete = self.state.search_runs, self.state.search_complete
        if runs and not complete[-1]:
            results = self._continue(runs[-1])  # Tune restores its own copy of the searcher's run bookkeeping
            if results is not None:
                self._stage_done(results, complete, PerCellSearcher(self.cfg, self.directory).in_flight())
            else:  # killed before Tune saved any trial: nothing to continue, start a new run
                complete[-1] = True
                self.save_state()
        searcher = PerCellSearcher(self.cfg, self.directory)
        searcher.start_new_run()  # trials of an earlier run that never ended are suggested again first
        if (searcher.remaining() or searcher.orphans()) and not searcher.budget_exhausted():
            searcher.finals_done |= self._finals_in_mlflow()  # a later search run must not repeat them early
            name = self._new_run(runs, complete, Stage.SEARCH)
            # an upper bound: the searcher ends the run
            samples = searcher.remaining() + len(searcher.orphans()) + searcher.finals_bound()
            stage = f"{Stage.SEARCH} + {Stage.FINAL}" if searcher.finals_bound() else Stage.SEARCH
            tuner = tune.Tuner(
                self._tune_trainable(), param_space={},
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=CellPruningScheduler(searcher),
                                            metric="val_error", mode="min", num_samples=samples,
                                            max_concurrent_trials=self.cfg.max_concurrent_trials, reuse_actors=True),
                run_config=tune_runs.run_config(name, self.directory.uri,
                                                self._callbacks(searcher, stage, list(searcher.cells), samples)))
            self._stage_done(fit(tuner), complete, searcher.in_flight())
        return searcher

    # ------------------------------------------------------------------ the final stage
    def final_configs(self, searcher: PerCellSearcher, warn: bool = True) -> list[dict]:
        """Each cell's val-best configuration × the final seeds; the choice is recorded on the parent run."""
        configs, best = [], searcher.best_per_cell()
        self.spool.submit("tags", run_id=self.state.parent_run_id, tags=best_tags(best))
        for key in searcher.cells:
            cell_configs = searcher.final_configs(key, best)
            if not cell_configs and self.cfg.final_seeds and warn:
                self.say(f"warning: {key} has no completed search trial (all diverged, failed or pruned): no final runs")
            configs += cell_configs
        return configs

    def _finals_in_mlflow(self) -> set[tuple]:
        """Final runs MLflow holds as completed; looked up only once a final stage has run."""
        if not self.state.final_runs and not (self.cfg.overlap_final and self.state.search_runs):
            return set()  # no final run can have started yet: nothing to look up (and no need for the server)
        self.flush_tracking(wait=True)  # what MLflow holds must be up to date; raises if it stays down
        runs = completed_finals(self.client, self.state.experiment_id, self.state.study_id)
        return {final_key({"cell": r.data.tags[Tag.CELL], "seed": r.data.tags[Tag.SEED],
                           **{k: r.data.params.get(k) for k in HPARAM_KEYS}}) for r in runs}

    def final_todo(self, searcher: PerCellSearcher, warn: bool = False) -> list[dict]:
        """Final runs not yet completed — early in a search run, or in MLflow from an earlier final stage."""
        done = searcher.finals_done | self._finals_in_mlflow()
        return [c for c in self.final_configs(searcher, warn) if final_key(c) not in done]

    def final(self, searcher: PerCellSearcher) -> None:
        runs, complete = self.state.final_runs, self.state.final_complete
        if runs and not complete[-1]:
            results = self._continue(runs[-1])
            if results is not None:
                self._stage_done(results, complete)
            else:
                complete[-1] = True
                self.save_state()
        todo = self.final_todo(searcher, warn=True)
        if not todo:
            return
        name = self._new_run(runs, complete, Stage.FINAL)
        callbacks = self._callbacks(None, Stage.FINAL, list(dict.fromkeys(c["cell"] for c in todo)), len(todo))
        tuner = tune.Tuner(self._tune_trainable(), param_space={"spec": tune.grid_search(todo)},
                           tune_config=tune.TuneConfig(max_concurrent_trials=self.cfg.max_concurrent_trials,
                                                       reuse_actors=True, scheduler=SnapshotOnAddScheduler()),
                           run_config=tune_runs.run_config(name, self.directory.uri, callbacks))
        self._stage_done(fit(tuner), complete)

    # ------------------------------------------------------------------ whole study
    def execute(self) -> str:
        """Search, final stage and report of a started or attached study; always leaves it resumable."""
        if self.state is None:
            raise RuntimeError("StudyDriver.execute needs a started or attached study")
        started = time.monotonic()
        write_deadline(self.directory, self.max_hours)
        status, state_status, ran_through = "FAILED", StudyStatus.FAILED, False
        try:
            searcher = self.search()
            self._raise_if_disk_short()
            if searcher.budget_exhausted() and (searcher.remaining() or searcher.orphans() or self.final_todo(searcher)):
                status, state_status = "FINISHED", StudyStatus.BUDGET_EXHAUSTED
                budget = f"of {self.max_hours:g} h " if self.max_hours is not None else ""  # a deadline file set by hand
                self.say(f"time budget {budget}reached: no new trial (search or final) was started; "
                         f"continue with --resume {self.state.study_id}")
            else:
                self.final(searcher)
                self._raise_if_disk_short()
                status, state_status = "FINISHED", StudyStatus.FINISHED
            self._summarise(searcher, time.monotonic() - started)
            ran_through = True
        except KeyboardInterrupt:
            status, state_status = "KILLED", StudyStatus.INTERRUPTED
            if self.guard.tripped is not None:
                raise self.guard.error(self.state.study_id) from None
            print(f"study {self.state.study_id} interrupted: running trials were checkpointed; "
                  f"resume with: python -m study.launch --resume {self.state.study_id}", file=sys.stderr, flush=True)
            raise StudyInterrupted() from None
        finally:
            self.close(status, state_status, ran_through)
        if self.report:
            from study.report.build import build_report

            build_report(self.tracking_uri, self.state.study_id, quiet=self.quiet)
        return self.state.study_id

    def close(self, status: str, state_status: str, ran_through: bool) -> None:
        """Record how the study ended, in its directory and on its parent run, and send what the spool holds."""
        self.state.status = state_status
        try:
            flush_record(self.directory)  # what the search appended last (S3 writes it behind the loop)
        except RecordConflict as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
        self.save_state()
        self.spool.submit("end", run_id=self.state.parent_run_id, status=status, tags={"study_status": state_status})
        try:
            self.flush_tracking(wait=ran_through)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop the driver's threads (idempotent, on every path): the spool's, whose unsent updates stay in
        its journal for the next resume, and the record's writer, which first writes what is queued."""
        from study.tracking.trial_runs import SPOOLS

        try:
            if self.state is not None:
                close_record(self.directory)
        except RecordConflict as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
        finally:
            if self.spool is not None:
                self.spool.close()
                if SPOOLS.get(self.state.study_id) is self.spool:
                    del SPOOLS[self.state.study_id]
                self.spool = None

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
        self.spool.submit("metrics", run_id=self.state.parent_run_id,
                          metrics=[[k, float(v), now, step] for k, v in metrics.items()])

"""Tune schedulers of a study: keep ended trials small in Tune's snapshot, prune only within a cell, and (final
stage) snapshot before a trial first starts."""

from __future__ import annotations

import sys

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from study.search.searcher import METRIC, PerCellSearcher


class CompactScheduler(FIFOScheduler):
    """FIFO, with an ended trial's windows of recent values per metric dropped from Tune's snapshot.

    Each snapshot is written whole, so its cost grows with the trials already run. Tune keeps the
    last values of every metric (``metric_n_steps``) only to average the results still to come: an
    ended trial has none, and they are a third of its bytes in every snapshot written after it
    (docs/performance.md).
    """

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        trial.run_metadata.metric_n_steps = {}  # an ended trial reports nothing more: its windows are dead weight


class SnapshotOnAddScheduler(CompactScheduler):
    """The final stage's: Tune's experiment state is saved before a new trial first starts.

    Tune otherwise snapshots on a timer: a driver killed between a trial's start and the next
    snapshot would leave a final run Tune does not know on resume. A search run needs no such save
    (its searcher suggests such trials again: ``PerCellSearcher.orphans``); the final stage's trials
    are few.
    """

    def __init__(self):
        super().__init__()
        self._snapshotted: set[str] = set()

    def choose_trial_to_run(self, tune_controller):
        trial = super().choose_trial_to_run(tune_controller)
        if trial is not None and trial.trial_id not in self._snapshotted:
            self._snapshotted.add(trial.trial_id)
            controller = getattr(tune_controller, "_tune_controller", tune_controller)
            try:
                controller.checkpoint(force=True, wait=True)
            except Exception as err:  # noqa: BLE001 - the study goes on, but the user must know what is at risk
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
                print(f"error: could not save Tune's experiment state before trial {trial.trial_id} started "
                      f"({reason}): if the driver is killed before the next save, that trial is lost and runs "
                      f"again on --resume", file=sys.stderr, flush=True)
        return trial


class CellPruningScheduler(CompactScheduler):
    """Stops a trial when its own cell's Optuna pruner says so; never compares across cells."""

    def __init__(self, searcher: PerCellSearcher):
        super().__init__()
        self.searcher = searcher

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get("outcome") or METRIC not in result:
            return TrialScheduler.CONTINUE
        last = result.get("epoch", 0) >= trial.config.get("epochs", 0)  # recorded, but never pruned at its end
        if self.searcher.should_prune(trial.trial_id, int(result["epoch"]), float(result[METRIC]), decide=not last):
            self.searcher.pruned.add(trial.trial_id)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

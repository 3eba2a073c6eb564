"""``study.search.schedulers``: Tune's state is saved once before each trial first starts, and a trial is pruned
only by its own cell's pruner, never at its last epoch (real Tune trial objects; the controller and the searcher
reduced to what a scheduler calls)."""

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from study.search.schedulers import CellPruningScheduler, SnapshotOnAddScheduler


def stub(trial_id, **config):
    """A real Tune trial object, pending (a stub: not scheduled)."""
    return Trial("train_cell", config=config, trial_id=trial_id, stub=True)


class Controller:
    """Tune's controller as far as a scheduler sees it: the trials, and a snapshot it can be asked for."""

    def __init__(self, trials, fail=False):
        self.trials, self.fail, self.saves = trials, fail, 0

    def get_trials(self):
        return self.trials

    def checkpoint(self, force, wait):
        assert force and wait
        self.saves += 1
        if self.fail:
            raise OSError("disk full\nsecond line")


def test_the_experiment_state_is_saved_once_before_each_trial_first_starts():
    a, b = stub("a"), stub("b")
    controller, scheduler = Controller([a, b]), SnapshotOnAddScheduler()
    assert scheduler.choose_trial_to_run(controller) is a and controller.saves == 1
    assert scheduler.choose_trial_to_run(controller) is a and controller.saves == 1  # chosen again: no second save
    a.set_status(Trial.RUNNING)
    assert scheduler.choose_trial_to_run(controller) is b and controller.saves == 2
    b.set_status(Trial.RUNNING)
    assert scheduler.choose_trial_to_run(controller) is None and controller.saves == 2


def test_a_failed_save_is_one_line_and_the_trial_still_starts(capsys):
    trial = stub("t1")
    assert SnapshotOnAddScheduler().choose_trial_to_run(Controller([trial], fail=True)) is trial
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "before trial t1 started (disk full)" in err[0] and "runs again on --resume" in err[0]


class Searcher:
    """Prunes when the value is above 0.5, and records what it was asked."""

    def __init__(self):
        self.pruned, self.asked = set(), []

    def should_prune(self, trial_id, step, value, decide=True):
        self.asked.append((trial_id, step, value, decide))
        return decide and value > 0.5


def test_pruning_asks_the_trials_own_cell_and_never_stops_its_last_epoch():
    searcher = Searcher()
    scheduler = CellPruningScheduler(searcher)
    trial = stub("t", epochs=3)
    assert scheduler.on_trial_result(None, trial, {"epoch": 1, "val_error": 0.4}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, trial, {"epoch": 2, "val_error": 0.9}) == TrialScheduler.STOP
    assert searcher.pruned == {"t"}
    assert scheduler.on_trial_result(None, trial, {"epoch": 3, "val_error": 0.9}) == TrialScheduler.CONTINUE
    assert searcher.asked == [("t", 1, 0.4, True), ("t", 2, 0.9, True), ("t", 3, 0.9, False)]  # the last: recorded
    # the end-of-trial report (it carries an outcome) and a result without the metric are not epochs
    assert scheduler.on_trial_result(None, trial, {"outcome": "completed", "val_error": 0.9}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, trial, {"epoch": 1}) == TrialScheduler.CONTINUE
    assert len(searcher.asked) == 3


def test_an_ended_trials_snapshot_drops_its_windows_of_recent_values_and_keeps_the_rest():
    """Tune keeps the last 5 and 10 values of every numeric metric to average results still to come; once a
    trial ends there are none, and they are a third of what it weighs in every snapshot written after."""
    trial = stub("t", epochs=3)
    for epoch in range(1, 4):
        trial.update_last_result({"epoch": epoch, "val_error": 1.0 / epoch, "training_iteration": epoch,
                                  **{f"metric_{i}": float(epoch * i) for i in range(20)}})
    before = trial.get_json_state()[1]
    SnapshotOnAddScheduler().on_trial_complete(None, trial, trial.last_result)
    after = trial.get_json_state()[1]  # Tune caches this JSON: the cache must not hide the change
    assert len(after) < 0.75 * len(before)
    restored = stub("t")
    restored.restore_run_metadata(after)
    assert restored.run_metadata.metric_n_steps == {}
    assert restored.last_result["val_error"] == 1.0 / 3
    assert restored.metric_analysis["val_error"]["min"] == 1.0 / 3  # the summary Tune's ResultGrid reads is kept

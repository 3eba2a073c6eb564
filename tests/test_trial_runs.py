"""``study.tracking.trial_runs``: Tune's events become the spool's updates with the tag contract (fake trials and
spool: no Ray, no MLflow server; the spool itself: tests/test_spool.py)."""

import contextlib
import pickle
from types import SimpleNamespace

from study.tracking.contract import completed_finals
from study.tracking.trial_runs import END_METRICS, TrialTracker, is_end_metric
from study.trial_schema import hparams_hash

HP = {"optimizer": "adam", "lr": 0.001, "loc_lr_mult": 1.0, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 64}


class Spool:
    def __init__(self):
        self.updates = []

    def submit(self, kind, **fields):
        self.updates.append((kind, fields))

    def keep_files(self, files, key):
        self.kept = [f.name for f in files]
        return f"/spool/{key}"


def trial(trial_id, stage="search", last=None, checkpoint=None, error=None, **config):
    config = {"cell": "rotated-mnist/STN-C1", "dataset": "rotated-mnist", "variant": "STN-C1", "stage": stage,
              "seed": 3, "trial_number": 7, **HP, **config}
    return SimpleNamespace(trial_id=trial_id, config=config, last_result=last, checkpoint=checkpoint,
                           error_message=error, run_metadata=SimpleNamespace(num_failures=2))


def test_a_trial_opens_one_child_run_with_the_tag_contract():
    spool = Spool()
    tracker = TrialTracker(spool, "parent", "study-1")
    t = trial("t1", stage="final", selected_from=4)
    tracker.on_trial_start(0, [], t)
    tracker.on_trial_start(0, [], t)  # restarted after a crash: the same run
    ((kind, fields),) = spool.updates
    assert kind == "open" and fields["key"] == "t1" and fields["run_name"] == "rotated-mnist/STN-C1 final #7"
    assert fields["tags"] == {"mlflow.parentRunId": "parent", "study_id": "study-1", "cell": "rotated-mnist/STN-C1",
                              "stage": "final", "seed": "3", "trial_id": "t1", "outcome": "running",
                              "hparams_hash": hparams_hash(HP), "selected_from_trial": "4"}
    assert fields["params"]["variant"] == "STN-C1" and fields["params"]["depth"] == "1"


def test_epoch_results_and_the_end_result_are_logged_as_their_own_metrics():
    spool = Spool()
    tracker = TrialTracker(spool, "parent", "study-1")
    t = trial("t1")
    tracker.on_trial_result(0, [], t, {"epoch": 2, "val_error": 0.25, "lr": 0.1, "done": False, "pid": 99})
    tracker.on_trial_result(0, [], t, {"outcome": "completed", "epochs_completed": 3, "test_error": 0.2,
                                       "eq1_residual_rotation_d1": 0.5, "val_error": 0.2, "node_id": "n",
                                       "flag": True, "angle_slope": -1})
    tracker.on_trial_result(0, [], t, {"done": True})  # nothing to log: no update
    (_, epoch), (_, end) = spool.updates
    assert epoch["epoch"] == 2 and {(k, v, step) for k, v, _, step in epoch["metrics"]} == {("val_error", 0.25, 2),
                                                                                              ("lr", 0.1, 2)}
    assert end["epoch"] is None and {(k, v, step) for k, v, _, step in end["metrics"]} == {
        ("test_error", 0.2, 3), ("eq1_residual_rotation_d1", 0.5, 3), ("angle_slope", -1.0, 3)}
    assert is_end_metric("eq1_residual_scale_d2") and not is_end_metric("val_error") and "test_error" in END_METRICS


def test_each_way_a_trial_ends_sets_its_run_status_and_outcome(tmp_path):
    (tmp_path / "figures.npz").write_bytes(b"x")
    (tmp_path / "state.pt").write_bytes(b"x")  # not an artifact
    checkpoint = SimpleNamespace(as_directory=lambda: contextlib.nullcontext(str(tmp_path)))
    spool = Spool()
    searcher = SimpleNamespace(pruned={"p"})
    tracker = TrialTracker(spool, "parent", "study-1", searcher)
    tracker.on_trial_complete(0, [], trial("c", last={"outcome": "completed", "node_id": "n1"}, checkpoint=checkpoint))
    tracker.on_trial_complete(0, [], trial("p", last={"epoch": 1}))
    tracker.on_trial_complete(0, [], trial("s", last=None))
    tracker.on_trial_complete(0, [], trial("d", last={"outcome": "diverged", "message": "loss is nan at step 3"}))
    tracker.on_trial_error(0, [], trial("e", error="Traceback ...\nRuntimeError: CUDA out of memory"))
    tracker.on_trial_recover(0, [], trial("r", error="worker died\nActorDiedError: gone"))
    assert spool.kept == ["figures.npz"]
    ends = [(f["key"], f.get("status"), f["tags"]) for kind, f in spool.updates if kind in ("end", "tags")]
    assert ends == [("c", "FINISHED", {"outcome": "completed", "node_id": "n1"}),
                    ("p", "FINISHED", {"outcome": "pruned"}),
                    ("s", "KILLED", {"outcome": "stopped"}),
                    ("d", "FAILED", {"outcome": "diverged", "failure_reason": "loss is nan at step 3"}),
                    ("e", "FAILED", {"outcome": "failed", "failure_reason": "RuntimeError: CUDA out of memory"}),
                    ("r", None, {"restarts": "2", "last_restart_reason": "ActorDiedError: gone"})]
    assert ("files", {"key": "c", "dir": "/spool/c", "artifact_path": "figures"}) in spool.updates


def test_runs_still_open_at_the_end_are_killed_and_the_tracker_pickles_without_its_spool():
    spool = Spool()
    tracker = TrialTracker(spool, "parent", "study-2")
    tracker.on_trial_start(0, [], trial("a"))
    tracker.on_experiment_end([trial("a"), trial("never-started")])
    assert spool.updates[-1] == ("end", {"key": "a", "status": "KILLED", "only_if_running": True,
                                         "tags": {"outcome": "killed"}})
    copy = pickle.loads(pickle.dumps(tracker))  # Tuner.restore: the spool is looked up, not unpickled
    assert "spool" not in vars(copy) and copy.spool is spool


def test_completed_finals_asks_for_the_studys_completed_final_runs():
    asked = []
    client = SimpleNamespace(search_runs=lambda experiments, query, max_results: asked.append((experiments, query)) or [])
    assert completed_finals(client, "9", "s-1") == []
    assert asked == [(["9"], "tags.study_id = 's-1' and tags.stage = 'final' and tags.outcome = 'completed'")]

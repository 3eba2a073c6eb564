"""``study.tracking.trial_runs``: Tune's events become MLflow child runs with the tag contract — real Tune trial
objects, a real spool and a real sqlite MLflow store (the spool's own faults: tests/test_spool.py)."""

import pickle

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from ray import tune
from ray.train._internal.session import _TrainingResult
from ray.tune.experiment import Trial

from study.config import load
from study.search.searcher import PerCellSearcher
from study.tracking.contract import hparams_hash
from study.tracking.spool import TrackingSpool
from study.tracking.trial_runs import TrialTracker, is_end_metric

HP = {"optimizer": "adam", "lr": 0.001, "loc_lr_mult": 1.0, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 64}
STUDY = "runs-20260101-000000-abcd"


@pytest.fixture
def store(tmp_path):
    """(client, spool, parent run id, experiment id) on a new sqlite store."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("runs", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment, tags={"study_id": STUDY, "stage": "study"}).info.run_id
    spool = TrackingSpool(uri, tmp_path / "spool", experiment, STUDY)
    yield client, spool, parent, experiment
    spool.close()  # as the driver does at its end: the spool's thread stops


def trial(trial_id, stage="search", last=None, **config):
    config = {"cell": "rotated-mnist/STN-C1", "dataset": "rotated-mnist", "variant": "STN-C1", "stage": stage,
              "seed": 3, "trial_number": trial_id, **HP, **config}  # each its own search trial
    made = Trial("train_cell", config=config, trial_id=trial_id, stub=True)
    made.run_metadata.last_result = last or {}
    return made


def run_of(store, trial_id):
    client, _, _, experiment = store
    (run,) = client.search_runs([experiment], f"tags.trial_id = '{trial_id}'")
    return run


def test_a_trial_opens_one_child_run_with_the_tag_contract(store):
    client, spool, parent, _ = store
    tracker = TrialTracker(spool, parent, STUDY)
    t = trial("t1", stage="final", selected_from=4, trial_number=7)
    tracker.on_trial_start(0, [], t)
    tracker.on_trial_start(0, [], t)  # restarted after a crash: the same run
    assert spool.flush(30) == 0
    run = run_of(store, "t1")
    assert run.info.run_name == "rotated-mnist/STN-C1 final #7" and run.info.status == "RUNNING"
    assert {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") or k == "mlflow.parentRunId"} == {
        "mlflow.parentRunId": parent, "study_id": STUDY, "cell": "rotated-mnist/STN-C1", "stage": "final", "seed": "3",
        "trial_id": "t1", "trial_key": f"rotated-mnist+STN-C1+final-seed3-{hparams_hash(HP)}", "outcome": "running",
        "hparams_hash": hparams_hash(HP), "selected_from_trial": "4"}
    assert run.data.params["variant"] == "STN-C1" and run.data.params["depth"] == "1"


def test_epoch_results_and_the_end_result_are_logged_as_their_own_metrics(store):
    client, spool, parent, _ = store
    tracker = TrialTracker(spool, parent, STUDY)
    t = trial("t1")
    tracker.on_trial_start(0, [], t)
    tracker.on_trial_result(0, [], t, {"epoch": 2, "val_error": 0.25, "lr": 0.1, "done": False, "pid": 99})
    tracker.on_trial_result(0, [], t, {"outcome": "completed", "epochs_completed": 3, "test_error": 0.2,
                                       "eq1_residual_rotation_d1": 0.5, "val_error": 0.2, "node_id": "n",
                                       "flag": True, "angle_slope": -1, "a_new_metric": 0.5, "time_total_s": 9.0,
                                       "training_iteration": 3})
    tracker.on_trial_result(0, [], t, {"done": True})  # nothing to log
    assert spool.flush(30) == 0
    run = run_of(store, "t1")
    assert run.data.metrics == {"val_error": 0.25, "lr": 0.1, "test_error": 0.2, "eq1_residual_rotation_d1": 0.5,
                                "angle_slope": -1.0, "a_new_metric": 0.5}  # any number the trial reports, not Tune's
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_error")] == [(2, 0.25)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_error")] == [3]
    assert is_end_metric("eq1_residual_scale_d2") and not is_end_metric("val_error") and is_end_metric("test_error")
    assert is_end_metric("trial_seconds") and not is_end_metric("lr") and not is_end_metric("pid")


def test_each_way_a_trial_ends_sets_its_run_status_and_outcome(store, tmp_path):
    client, spool, parent, _ = store
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    np.savez(directory / "figures.npz", x=np.zeros(2))
    (directory / "state.pt").write_bytes(b"x")  # the trial's state: not an artifact
    searcher = PerCellSearcher(load("smoke", overrides={"variants": ["STN-C1"]}), tmp_path / STUDY)
    searcher.pruned.add("p")
    tracker = TrialTracker(spool, parent, STUDY, searcher)
    completed = trial("c", last={"outcome": "completed", "node_id": "n1"})
    completed.run_metadata.checkpoint_manager.register_checkpoint(  # its final report's checkpoint, as Tune keeps it
        _TrainingResult(checkpoint=tune.Checkpoint.from_directory(str(directory)), metrics={}))
    ended = {"c": completed, "p": trial("p", last={"epoch": 1}), "s": trial("s"),
             "d": trial("d", last={"outcome": "diverged", "message": "loss is nan at step 3"}),
             "e": trial("e"), "r": trial("r")}
    for t in ended.values():
        tracker.on_trial_start(0, [], t)
    for key in ("c", "p", "s", "d"):
        tracker.on_trial_complete(0, [], ended[key])
    ended["e"].error_message = "Traceback ...\nRuntimeError: CUDA out of memory"
    tracker.on_trial_error(0, [], ended["e"])
    ended["r"].error_message = "worker died\nActorDiedError: gone"
    ended["r"].run_metadata.num_failures = 2
    tracker.on_trial_recover(0, [], ended["r"])
    assert spool.flush(30) == 0
    runs = {key: run_of(store, key) for key in ended}
    assert {k: (r.info.status, r.data.tags["outcome"]) for k, r in runs.items()} == {
        "c": ("FINISHED", "completed"), "p": ("FINISHED", "pruned"), "s": ("KILLED", "stopped"),
        "d": ("FAILED", "diverged"), "e": ("FAILED", "failed"), "r": ("RUNNING", "running")}
    assert runs["c"].data.tags["node_id"] == "n1"
    assert runs["d"].data.tags["failure_reason"] == "loss is nan at step 3"
    assert runs["e"].data.tags["failure_reason"] == "RuntimeError: CUDA out of memory"
    assert (runs["r"].data.tags["restarts"], runs["r"].data.tags["last_restart_reason"]) == ("2", "ActorDiedError: gone")
    assert [a.path for a in client.list_artifacts(runs["c"].info.run_id, "figures")] == ["figures/figures.npz"]


def test_runs_still_open_at_the_end_are_killed_and_the_tracker_pickles_without_its_spool(store):
    client, spool, parent, _ = store
    tracker = TrialTracker(spool, parent, STUDY)
    tracker.on_trial_start(0, [], trial("a"))
    tracker.on_trial_start(0, [], trial("b"))
    tracker.on_trial_complete(0, [], trial("b", last={"outcome": "completed"}))
    tracker.on_experiment_end([trial("a"), trial("b"), trial("never-started")])
    assert spool.flush(30) == 0
    a, b = run_of(store, "a"), run_of(store, "b")
    assert (a.info.status, a.data.tags["outcome"]) == ("KILLED", "killed")
    assert (b.info.status, b.data.tags["outcome"]) == ("FINISHED", "completed")  # an ended run stays as it ended
    copy = pickle.loads(pickle.dumps(tracker))  # Tuner.restore: the spool is looked up, not unpickled
    assert "spool" not in vars(copy) and copy.spool is spool
    assert tune.Callback in type(copy).__mro__


def test_a_trial_suggested_again_under_a_new_tune_id_continues_its_own_run(store, tmp_path):
    """A driver restarted after Tune's last snapshot missed the trial: another Tune trial, the same trial key."""
    client, spool, parent, experiment = store
    first = trial("t1", trial_number=5)
    tracker = TrialTracker(spool, parent, STUDY)
    tracker.on_trial_start(0, [], first)
    tracker.on_trial_result(0, [], first, {"epoch": 1, "val_error": 0.5})
    assert spool.flush(30) == 0
    spool.close()
    again = trial("t9", trial_number=5)
    later_spool = TrackingSpool(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "spool-2", experiment, STUDY)
    later = TrialTracker(later_spool, parent, STUDY)
    later.on_trial_start(0, [], again)
    for epoch, value in ((1, 0.5), (2, 0.4)):  # epoch 1 was logged before the restart: once
        later.on_trial_result(0, [], again, {"epoch": epoch, "val_error": value})
    later.on_trial_complete(0, [], trial("t9", trial_number=5, last={"outcome": "completed"}))
    assert later_spool.flush(30) == 0
    later_spool.close()
    (run,) = client.search_runs([experiment], f"tags.study_id = '{STUDY}' and tags.stage = 'search'")
    assert run.data.tags["trial_key"] == "rotated-mnist+STN-C1+search-5" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_error")] == [1, 2]

"""``study.trial``: a study config becomes the loop's config, and the trainable — run by real Tune on a local
Ray — reports every epoch, keeps its resume state in the storage and ends with its outcome and one checkpoint."""

import json
import sys
from pathlib import Path

import pytest
import ray
import torch
from ray import tune

from study.signals import fit
from study.trial import (
    MODEL_FILE,
    RESUME_DIR,
    RESUME_FILE,
    SPEC_FILE,
    STATE_FILE,
    load_resume,
    save_resume,
    train_cell,
    train_config,
)
from study.trial_schema import trial_key
from study.tune_runs import run_config

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

CONFIG = {"cell": "rotated-mnist/CNN", "dataset": "rotated-mnist", "variant": "CNN", "stage": "final", "epochs": 2,
          "train_size": 64, "seed": 5, "device": "cpu", "test_passes": 1, "optimizer": "adam", "lr": 1e-3,
          "loc_lr_mult": 1.0, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 32, "threads": 1}


class Results(tune.Callback):
    """Every result a trial reported, and its last checkpoint's files, as the driver sees them."""

    def __init__(self):
        self.reports, self.files, self.trial_dirs = [], [], []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.reports.append(result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.trial_dirs.append(Path(trial.path))
        if trial.checkpoint is not None:
            with trial.checkpoint.as_directory() as directory:
                self.files = sorted(p.name for p in Path(directory).iterdir())


def run_trial(tmp_path, trainable, config) -> Results:
    results = Results()
    fit(tune.Tuner(trainable, param_space=config,  # Tune's SIGINT handler must not outlive the run
                   run_config=run_config("trial", str(tmp_path / "tune"), [results])))
    return results


def test_the_study_config_becomes_the_loops_config(tmp_path):
    cfg = train_config({**CONFIG, "data_root": str(tmp_path), "dataset": "svhn", "lr_milestones": [0.5],
                        "warmup_epochs": 0.5, "spec": "ignored"})
    assert (cfg.dataset, cfg.variant, cfg.epochs, cfg.seed, cfg.batch_size) == ("svhn", "CNN", 2, 5, 32)
    assert cfg.data_root == str(tmp_path / "svhn") and not cfg.download  # trials only read what the driver prepared
    assert cfg.lr_milestones == (0.5,) and cfg.warmup_epochs == 0.5 and cfg.st_transform == "affine"
    assert train_config({**CONFIG, "data_root": None}).data_root is None  # the embedded MNIST subset


def test_a_final_trial_reports_each_epoch_then_its_outcome_figures_and_model(ray_local, tmp_path):
    results = run_trial(tmp_path, train_cell, CONFIG)
    first, second, last = [r for r in results.reports if "epoch" in r or r.get("outcome")][:3]
    assert [first["epoch"], second["epoch"]] == [1, 2] and first["restored_from_epoch"] == 0
    assert 0 < first["trial_seconds"] <= second["trial_seconds"]
    assert last["outcome"] == "completed" and last["node_id"] and 0 <= last["test_error"] <= 1
    assert {STATE_FILE, MODEL_FILE, SPEC_FILE, "figures.npz"} <= set(results.files)  # one checkpoint: the final
    # what a restart would resume from: in the study's storage, under the trial's key (not Tune's trial folder)
    kept = torch.load(tmp_path / "tune" / RESUME_DIR / f"{trial_key(CONFIG)}.pt", weights_only=False)
    assert set(kept) == {"final", "epoch"} and kept["epoch"] == 2  # the weights are in the final checkpoint only
    assert kept["final"]["test_error"] == last["test_error"]


def keeps_and_reads_its_state(config):  # sent to the worker by value: the tests folder is not importable there
    """Resume state through the storage: none at first, then what was saved, replaced whole."""
    key = config["key"]
    assert load_resume(key) is None
    save_resume({"epoch": 1, "weights": torch.arange(3)}, key)
    save_resume({"epoch": 2, "weights": torch.arange(4)}, key)
    state = load_resume(key)
    tune.report({"epoch": state["epoch"], "weights": state["weights"].tolist()})


@pytest.mark.parametrize("key", [None, "rotated-mnist+CNN+search-3", "rotated-mnist+CNN+final-seed0-abc"])
def test_the_resume_state_round_trips_through_the_storage_and_is_replaced_whole(ray_local, tmp_path, key):
    results = run_trial(tmp_path, keeps_and_reads_its_state, {"key": key})
    assert [(r["epoch"], r["weights"]) for r in results.reports] == [(2, [0, 1, 2, 3])]
    (trial_dir,) = results.trial_dirs
    kept = sorted(p.name for p in trial_dir.iterdir() if p.name.startswith("resume"))
    if key is None:  # a trial run outside a study: in Tune's trial folder
        assert kept == [RESUME_FILE]  # no leftovers
    else:  # a study's trial: under its key, where a later Tune run of the study finds it
        assert kept == [] and sorted(p.name for p in (tmp_path / "tune" / RESUME_DIR).iterdir()) == [f"{key}.pt"]


@pytest.mark.parametrize("stage", ["search", "final"])
def test_a_trial_that_ended_unseen_by_tunes_snapshot_reports_its_end_or_retrains_for_its_model(ray_local, tmp_path,
                                                                                                stage):
    """Suggested again after a driver restart: a search trial's end stands; a final run's model is in no
    checkpoint, so it trains again."""
    config = {**CONFIG, "stage": stage, "trial_number": 4}
    path = tmp_path / "tune" / RESUME_DIR / f"{trial_key(config)}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"final": {"val_error": 0.125, "test_error": 0.25}, "epoch": 2}, path)
    results = run_trial(tmp_path, train_cell, config)
    epochs = [r["epoch"] for r in results.reports if "epoch" in r and not r.get("outcome")]
    if stage == "search":
        assert epochs == [] and results.reports[-1]["test_error"] == 0.25
    else:
        assert epochs == [1, 2] and MODEL_FILE in results.files and results.reports[-1]["test_error"] != 0.25


def test_a_diverged_trial_reports_the_worst_val_error(ray_local, tmp_path):
    results = run_trial(tmp_path, train_cell, {**CONFIG, "stage": "search", "optimizer": "sgd", "lr": 1e30, "epochs": 1})
    last = results.reports[-1]
    assert last["outcome"] == "diverged" and last["val_error"] == 1.0 and results.files == []
    assert json.dumps(last["message"])  # a message the record can hold

"""``study.trial``: a study config becomes the loop's config, and the trainable — run by real Tune on a local
Ray — reports every epoch, keeps its resume state in the storage and ends with its outcome and one checkpoint."""

import json
import sys
from pathlib import Path

import ray
import torch
from ray import tune

from study.signals import fit
from study.trial import MODEL_FILE, RESUME_FILE, SPEC_FILE, STATE_FILE, load_resume, save_resume, train_cell, train_config
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
    (trial_dir,) = results.trial_dirs
    kept = torch.load(trial_dir / RESUME_FILE, weights_only=False)  # what a restart would resume from
    assert set(kept) == {"final", "epoch"} and kept["epoch"] == 2  # the weights are in the final checkpoint only
    assert kept["final"]["test_error"] == last["test_error"]


def keeps_and_reads_its_state(config):  # sent to the worker by value: the tests folder is not importable there
    """Resume state through the storage: none at first, then what was saved, replaced whole."""
    assert load_resume() is None
    save_resume({"epoch": 1, "weights": torch.arange(3)})
    save_resume({"epoch": 2, "weights": torch.arange(4)})
    state = load_resume()
    tune.report({"epoch": state["epoch"], "weights": state["weights"].tolist()})


def test_the_resume_state_round_trips_through_the_storage_and_is_replaced_whole(ray_local, tmp_path):
    results = run_trial(tmp_path, keeps_and_reads_its_state, {})
    assert [(r["epoch"], r["weights"]) for r in results.reports] == [(2, [0, 1, 2, 3])]
    (trial_dir,) = results.trial_dirs
    assert sorted(p.name for p in trial_dir.iterdir() if p.name.startswith("resume")) == [RESUME_FILE]  # no leftovers


def test_a_diverged_trial_reports_the_worst_val_error(ray_local, tmp_path):
    results = run_trial(tmp_path, train_cell, {**CONFIG, "stage": "search", "optimizer": "sgd", "lr": 1e30, "epochs": 1})
    last = results.reports[-1]
    assert last["outcome"] == "diverged" and last["val_error"] == 1.0 and results.files == []
    assert json.dumps(last["message"])  # a message the record can hold

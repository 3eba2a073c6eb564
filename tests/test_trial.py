"""``study.trial``: a study config becomes the loop's config, and the trainable reports every epoch with a
checkpoint and ends with its outcome (through a stand-in for ``ray.tune``'s session calls: no Ray)."""

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import torch

from study import trial
from study.trial import MODEL_FILE, SPEC_FILE, STATE_FILE, train_cell, train_config

CONFIG = {"cell": "rotated-mnist/CNN", "dataset": "rotated-mnist", "variant": "CNN", "stage": "final", "epochs": 2,
          "train_size": 64, "seed": 5, "device": "cpu", "test_passes": 1, "optimizer": "adam", "lr": 1e-3,
          "loc_lr_mult": 1.0, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 32, "threads": 1}


class FakeTune:
    """``get_checkpoint``/``report``/``Checkpoint``: each report keeps the names of its checkpoint's files."""

    def __init__(self, resume_dir=None):
        self.reports, self.resume_dir = [], resume_dir
        self.Checkpoint = SimpleNamespace(from_directory=lambda d: sorted(p.name for p in Path(d).iterdir()))

    def get_checkpoint(self):
        if self.resume_dir is None:
            return None
        return SimpleNamespace(as_directory=lambda: contextlib.nullcontext(self.resume_dir))

    def report(self, metrics, checkpoint=None):
        self.reports.append((metrics, checkpoint))


def test_the_study_config_becomes_the_loops_config(tmp_path):
    cfg = train_config({**CONFIG, "data_root": str(tmp_path), "dataset": "svhn", "lr_milestones": [0.5],
                        "warmup_epochs": 0.5, "spec": "ignored"})
    assert (cfg.dataset, cfg.variant, cfg.epochs, cfg.seed, cfg.batch_size) == ("svhn", "CNN", 2, 5, 32)
    assert cfg.data_root == str(tmp_path / "svhn") and not cfg.download  # trials only read what the driver prepared
    assert cfg.lr_milestones == (0.5,) and cfg.warmup_epochs == 0.5 and cfg.st_transform == "affine"
    assert train_config({**CONFIG, "data_root": None}).data_root is None  # the embedded MNIST subset


def test_a_final_trial_reports_each_epoch_then_its_outcome_figures_and_model(monkeypatch):
    fake = FakeTune()
    monkeypatch.setattr(trial, "tune", fake)
    monkeypatch.setattr(trial, "_node_id", lambda: "node-1")
    train_cell(CONFIG)
    (first, first_files), (second, _), (last, last_files) = fake.reports
    assert [first["epoch"], second["epoch"]] == [1, 2] and first_files == [STATE_FILE]
    assert first["restored_from_epoch"] == 0 and 0 < first["trial_seconds"] <= second["trial_seconds"]
    assert last["outcome"] == "completed" and last["node_id"] == "node-1" and 0 <= last["test_error"] <= 1
    assert {STATE_FILE, MODEL_FILE, SPEC_FILE, "figures.npz"} <= set(last_files)


def test_a_trial_that_finished_before_an_interruption_reports_its_result_again(monkeypatch, tmp_path):
    torch.save({"final": {"test_error": 0.125, "val_error": 0.1}, "epoch": 2}, tmp_path / STATE_FILE)
    fake = FakeTune(resume_dir=str(tmp_path))
    monkeypatch.setattr(trial, "tune", fake)
    train_cell(CONFIG)
    assert fake.reports == [({"outcome": "completed", "test_error": 0.125, "val_error": 0.1}, None)]


def test_a_diverged_trial_reports_the_worst_val_error(monkeypatch):
    fake = FakeTune()
    monkeypatch.setattr(trial, "tune", fake)
    train_cell({**CONFIG, "stage": "search", "optimizer": "sgd", "lr": 1e30, "epochs": 1})
    last, checkpoint = fake.reports[-1]
    assert last["outcome"] == "diverged" and last["val_error"] == 1.0 and checkpoint is None
    assert json.dumps(last["message"])  # a message the record can hold

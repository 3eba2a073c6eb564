"""Training defaults have one owner, TrainConfig's dataclass: the CLI, the study config, the trial and evaluation read it."""

import inspect
from dataclasses import fields

from study.config import StudyConfig
from trainables.evaluate import evaluate
from trainables.train import parser
from trainables.train_config import TRAIN_DEFAULTS, TrainConfig


def test_the_defaults_are_the_dataclass_fields():
    assert TRAIN_DEFAULTS == {f.name: f.default for f in fields(TrainConfig)}
    assert TRAIN_DEFAULTS["lr_milestones"] == (1 / 3, 2 / 3) and TRAIN_DEFAULTS["optimizer"] == "sgd"  # the paper's


def test_the_cli_defaults_are_trainconfigs():
    args = vars(parser().parse_args([]))
    shared = {k: v for k, v in args.items() if k in TRAIN_DEFAULTS}
    assert set(TRAIN_DEFAULTS) - set(shared) == {"lr_gamma"}  # every other option is on the command line
    assert {**shared, "lr_milestones": tuple(shared["lr_milestones"])} == {k: TRAIN_DEFAULTS[k] for k in shared}


def test_the_study_configs_training_fields_default_to_trainconfigs():
    cfg = StudyConfig()
    for name in ("epochs", "train_size", "test_passes", "warmup_epochs", "device", "data_root", "download"):
        assert getattr(cfg, name) == TRAIN_DEFAULTS[name], name
    assert tuple(cfg.lr_milestones) == TRAIN_DEFAULTS["lr_milestones"]
    assert cfg.datasets == [TRAIN_DEFAULTS["dataset"]] and cfg.st_transforms == [TRAIN_DEFAULTS["st_transform"]]
    assert cfg.search.batch_size == [TRAIN_DEFAULTS["batch_size"]]


def test_a_trial_without_an_option_trains_with_trainconfigs_default():
    from study.trial import train_config

    cell = {"dataset": "scaled-mnist", "variant": "CNN", "epochs": 3}
    assert train_config(cell) == TrainConfig(**cell)


def test_evaluation_draws_the_default_number_of_test_passes():
    assert inspect.signature(evaluate).parameters["passes"].default == TRAIN_DEFAULTS["test_passes"]

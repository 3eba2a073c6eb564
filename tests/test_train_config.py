"""Training options have one owner, TrainConfig's dataclass: the CLI, the study config, the trial, MLflow's params
and evaluation read it, and one check validates a value wherever it is given."""

import inspect
import typing
from dataclasses import fields

import pytest

from study.config import RUN_OPTIONS, StudyConfig
from trainables.evaluate import evaluate
from trainables.train import parser
from trainables.train_config import (
    CELL,
    OPTION_TYPES,
    OPTIONS,
    SEARCHED,
    SEED,
    TRAIN_DEFAULTS,
    ConfigError,
    TrainConfig,
    option_problem,
    options_of,
)


def test_the_defaults_are_the_dataclass_fields():
    assert TRAIN_DEFAULTS == {f.name: f.default for f in fields(TrainConfig)}
    assert TRAIN_DEFAULTS["lr_milestones"] == (1 / 3, 2 / 3) and TRAIN_DEFAULTS["optimizer"] == "sgd"  # the paper's


def test_the_cli_has_a_flag_for_every_option_with_its_default():
    args = vars(parser().parse_args([]))
    assert set(TRAIN_DEFAULTS) <= set(args)
    assert {k: tuple(v) if k == "lr_milestones" else v for k, v in args.items() if k in TRAIN_DEFAULTS} == TRAIN_DEFAULTS
    given = parser().parse_args(["--lr-gamma", "0.5", "--lr-milestones", "--train-size", "7", "--download"])
    assert (given.lr_gamma, given.lr_milestones, given.train_size, given.download) == (0.5, [], 7, True)


# Options a study does not set once for all trials: the cell names them, the search (or the fixed recipe)
# chooses the hyper-parameters, and every final run has its own seed.
NOT_STUDY_WIDE = {*options_of(CELL), *options_of(SEARCHED), *options_of(SEED)}


def _another_value(name: str):
    """A valid value other than the option's default, found from its type and allowed values alone."""
    default, kind, allowed = TRAIN_DEFAULTS[name], OPTION_TYPES[name], OPTIONS[name].metadata["choices"]
    if allowed:
        return next(v for v in allowed if v != default and v != "cuda")
    if kind is bool:
        return not default
    if typing.get_origin(kind) is tuple:
        return (0.5,)
    if kind in (int, int | None):
        return (default or 1) + 2
    if kind is float:
        return default / 2 if default else 0.5
    return "/tmp/elsewhere"  # a path


@pytest.mark.parametrize("name", [f.name for f in fields(TrainConfig) if f.name not in NOT_STUDY_WIDE])
def test_every_training_option_is_reachable_from_a_study(name):
    """A new TrainConfig field fails here until a study config and --set can set it, every trial trains
    with it and MLflow records it (or it takes one of the roles above)."""
    from study.config import load
    from study.trial import train_config
    from study.trial_schema import PARAM_KEYS, constants, mlflow_params

    value = _another_value(name)
    cfg = load("smoke", overrides={name: value})
    assert getattr(cfg, name) == value
    trial = {**constants(cfg, "search"), "cell": "rotated-mnist/CNN", "dataset": "rotated-mnist", "variant": "CNN",
             "st_transform": "affine", "seed": 1}
    trained = getattr(train_config(trial), name)
    if name == "download":
        assert trained is False  # the driver downloads before any trial; trials only read
    elif name == "data_root":
        assert trained.startswith(value)
    else:
        assert trained == value
    assert name in PARAM_KEYS and mlflow_params(trial)[name] == str(list(value) if isinstance(value, tuple) else value)


@pytest.mark.parametrize("name", [f.name for f in fields(TrainConfig)])
def test_a_study_and_a_training_reject_the_same_bad_values(name):
    """One check per option: what TrainConfig refuses, the study config refuses with the same words."""
    from study.config import ConfigError as StudyConfigError
    from study.config import load

    bad = {"lr_milestones": (1.5,), "device": "tpu", "train_size": 0, "data_root": None, "download": None}.get(name)
    kind = OPTION_TYPES[name]
    if bad is None and name not in ("data_root", "download"):
        bad = "nonsense" if OPTIONS[name].metadata["choices"] else (-1.0 if kind is float else -1)
    problem = option_problem(name, bad)
    if problem is None or name in NOT_STUDY_WIDE:
        assert name in NOT_STUDY_WIDE or kind in (bool, str | None)  # nothing to refuse but a wrong type
        return
    with pytest.raises(ConfigError, match=f"^{name}: "):
        TrainConfig(**{name: bad}).validate()
    with pytest.raises(StudyConfigError) as err:
        load("smoke", overrides={name: bad})
    assert err.value.lines == [f"{name}: {problem}"]


def test_the_study_configs_training_fields_default_to_trainconfigs():
    cfg = StudyConfig()
    for name in RUN_OPTIONS:
        assert getattr(cfg, name) == TRAIN_DEFAULTS[name], name
    assert cfg.datasets == [TRAIN_DEFAULTS["dataset"]] and cfg.st_transforms == [TRAIN_DEFAULTS["st_transform"]]
    assert cfg.search.batch_size == [TRAIN_DEFAULTS["batch_size"]]


def test_a_trial_without_an_option_trains_with_trainconfigs_default():
    from study.trial import train_config

    cell = {"dataset": "scaled-mnist", "variant": "CNN", "epochs": 3}
    assert train_config(cell) == TrainConfig(**cell)


def test_evaluation_draws_the_default_number_of_test_passes():
    assert inspect.signature(evaluate).parameters["passes"].default == TRAIN_DEFAULTS["test_passes"]

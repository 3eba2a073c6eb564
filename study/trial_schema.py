"""What a trial's config holds, in one place.

A trial is one Tune config (a flat dict). The search space fills its hyper-parameters, the study
config its constants, the cell its identity; the Tune trainable turns it into a training config,
tracking into MLflow params and tags, and the final stage into a final run's identity — all from the
key lists and functions here, so that no module spells them out again.
"""

from __future__ import annotations

from study.config import RUN_OPTIONS, Cell, StudyConfig
from study.tracking.contract import Stage, hparams_hash
from trainables.train_config import CELL, SEARCHED, SEED, options_of

# The searched hyper-parameters, the cell's fields and the study-wide options: TrainConfig's roles
HPARAM_KEYS = options_of(SEARCHED)
CELL_KEYS = ("cell", *options_of(CELL))
# MLflow params of a trial run: the cell, the variant's spec, every training option, the trial's number
PARAM_KEYS = ("dataset", "variant", "st_transform", "depth", "sharing", "iterations", *HPARAM_KEYS, *RUN_OPTIONS,
              *options_of(SEED), "trial_number")


def constants(cfg: StudyConfig, stage: str) -> dict:
    """The study-wide part of every trial's config: every run option, the stage, the threads per trial."""
    options = {name: getattr(cfg, name) for name in RUN_OPTIONS}
    options["lr_milestones"] = list(options["lr_milestones"])  # a Tune config is plain JSON
    if stage == Stage.FINAL:
        options["epochs"] = cfg.final_epochs or cfg.epochs
    return {"stage": stage, **options, "threads": max(1, int(cfg.resources.cpus))}


def cell_fields(cell: Cell) -> dict:
    return dict(zip(CELL_KEYS, (cell.key, cell.dataset, cell.variant, cell.st_transform), strict=True))


def hparams(config: dict) -> dict:
    return {k: config[k] for k in HPARAM_KEYS if k in config}


def final_key(config: dict) -> tuple:
    """What makes two final runs the same: cell, seed and hyper-parameters, as MLflow stores them."""
    return (config["cell"], str(config["seed"]), tuple(str(config[k]) for k in HPARAM_KEYS))


def trial_key(config: dict) -> str | None:
    """A trial's identity across Tune runs and driver restarts, or None for a trial run outside a study.

    A search trial is its cell's Optuna trial number, a final run its cell, seed and configuration. Its
    MLflow run and its resume state are found by this key, not by Tune's trial id, so a trial started
    after Tune's last snapshot, and suggested again on ``--resume`` under its own number (or, for a
    final run, its own configuration), continues its run and its epochs instead of repeating them.
    """
    cell = config.get("cell", "").replace("/", "+")
    if config.get("stage") == Stage.SEARCH and config.get("trial_number") is not None:
        return f"{cell}+search-{config['trial_number']}"
    if config.get("stage") == Stage.FINAL and all(k in config for k in HPARAM_KEYS):
        return f"{cell}+final-seed{config.get('seed', 0)}-{hparams_hash(config)}"
    return None


def mlflow_params(config: dict) -> dict[str, str]:
    from trainables.registry import parse_variant

    spec = parse_variant(config["variant"])
    values = {**config, "depth": "none" if spec.depth is None else spec.depth, "sharing": spec.sharing,
              "iterations": spec.iterations}
    return {k: str(values[k]) for k in PARAM_KEYS if k in values}

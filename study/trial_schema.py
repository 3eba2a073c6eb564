"""What a trial's config holds, in one place.

A trial is one Tune config (a flat dict). The search space fills its hyper-parameters, the study
config its constants, the cell its identity; the Tune trainable turns it into a training config,
tracking into MLflow params and tags, and the final stage into a final run's identity — all from the
key lists and functions here, so that no module spells them out again.
"""

from __future__ import annotations

import hashlib
import json

from study.config import Cell, StudyConfig

HPARAM_KEYS = ("optimizer", "lr", "loc_lr_mult", "momentum", "weight_decay", "batch_size")
CELL_KEYS = ("cell", "dataset", "variant", "st_transform")
# MLflow params of a trial run: the cell, the variant's spec, the hyper-parameters, the run's size and seed
PARAM_KEYS = ("dataset", "variant", "st_transform", "depth", "sharing", "iterations", *HPARAM_KEYS, "epochs",
              "train_size", "seed", "trial_number", "test_passes")


def constants(cfg: StudyConfig, stage: str) -> dict:
    """The study-wide part of every trial's config."""
    epochs = cfg.final_epochs or cfg.epochs if stage == "final" else cfg.epochs
    return {"stage": stage, "epochs": epochs, "train_size": cfg.train_size, "test_passes": cfg.test_passes,
            "device": cfg.device, "data_root": cfg.data_root, "download": cfg.download,
            "threads": max(1, int(cfg.resources.cpus)), "lr_milestones": list(cfg.lr_milestones),
            "warmup_epochs": cfg.warmup_epochs}


def cell_fields(cell: Cell) -> dict:
    return dict(zip(CELL_KEYS, (cell.key, cell.dataset, cell.variant, cell.st_transform)))


def hparams(config: dict) -> dict:
    return {k: config[k] for k in HPARAM_KEYS if k in config}


def hparams_hash(config: dict) -> str:
    """A short fingerprint of a configuration's hyper-parameters: a final run names the one it retrains."""
    return hashlib.sha256(json.dumps([str(config[k]) for k in HPARAM_KEYS]).encode()).hexdigest()[:12]


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
    if config.get("stage") == "search" and config.get("trial_number") is not None:
        return f"{cell}+search-{config['trial_number']}"
    if config.get("stage") == "final" and all(k in config for k in HPARAM_KEYS):
        return f"{cell}+final-seed{config.get('seed', 0)}-{hparams_hash(config)}"
    return None


def mlflow_params(config: dict) -> dict[str, str]:
    from trainables.registry import parse_variant

    spec = parse_variant(config["variant"])
    values = {**config, "depth": "none" if spec.depth is None else spec.depth, "sharing": spec.sharing,
              "iterations": spec.iterations}
    return {k: str(values[k]) for k in PARAM_KEYS if k in values}

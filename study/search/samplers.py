"""Per-cell Optuna samplers and pruners, and the seeds the search stage hands to its trials.

Search trials draw their seeds from their own stream, ``[FINAL_SEED_LIMIT, 2**31)``, derived from
(study seed, cell, Optuna trial number): a final run (seeds below ``FINAL_SEED_LIMIT``, checked by the
config) is never a bit-identical rerun of the search trial it was selected from, and a resumed or
extended study gives the same trial the same seed.
"""

from __future__ import annotations

import hashlib

import optuna

from study.config import FINAL_SEED_LIMIT, StudyConfig

SEARCH_SEED_END = 2**31  # exclusive; keeps every seed a valid 32-bit seed for numpy as well as torch


def cell_seed(seed: int, key: str) -> int:
    """The seed of one cell's sampler: cells sample independently, reproducibly."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:4], "little")


def search_seed(seed: int, key: str, number: int) -> int:
    """The training seed of search trial ``number`` of cell ``key``: never one a final run can take."""
    digest = int.from_bytes(hashlib.sha256(f"search/{seed}/{key}/{number}".encode()).digest()[:8], "little")
    return FINAL_SEED_LIMIT + digest % (SEARCH_SEED_END - FINAL_SEED_LIMIT)


def make_sampler(cfg: StudyConfig, key: str, held: int = 0) -> optuna.samplers.BaseSampler:
    """The cell's sampler from ``cfg.sampler``; the first ``n_startup_trials`` trials are random for tpe/gp.

    ``held``: trials the cell's study already holds (a resumed or extended search). The sampler is
    rebuilt each time the study is opened (its random state is not part of the record), seeded by
    (seed, cell, held) so that a resumed search never replays the first session's draws. GP samples
    the SGD-only ``momentum`` (a conditional parameter) at random: that is expected, not warned.
    """
    seed = cell_seed(cfg.seed, key if not held else f"{key}/{held}")
    kind, startup = cfg.sampler, cfg.n_startup_trials
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    if cfg.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=cfg.grace_period, reduction_factor=cfg.reduction_factor)
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=cfg.grace_period)
    return optuna.pruners.NopPruner()

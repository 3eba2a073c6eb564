"""``study.search.samplers``: seeds from hashes (stable, per cell, never a final run's), and the configured
sampler and pruner (the searcher's use of them: tests/test_searcher.py)."""

import hashlib

import optuna
import pytest

from study.config import FINAL_SEED_LIMIT, load
from study.search.samplers import SEARCH_SEED_END, cell_seed, make_pruner, make_sampler, search_seed


def test_cell_seeds_are_the_first_four_bytes_of_a_hash_of_study_seed_and_cell():
    expected = int.from_bytes(hashlib.sha256(b"7/rotated-mnist/CNN").digest()[:4], "little")
    assert cell_seed(7, "rotated-mnist/CNN") == expected
    assert len({cell_seed(seed, key) for seed in (0, 1) for key in ("a", "b")}) == 4


def test_search_seeds_lie_in_their_own_stream_and_are_reproducible():
    seeds = [search_seed(0, "rotated-mnist/CNN", n) for n in range(200)]
    assert all(FINAL_SEED_LIMIT <= s < SEARCH_SEED_END == 2**31 for s in seeds)
    assert len(set(seeds)) == 200 and seeds == [search_seed(0, "rotated-mnist/CNN", n) for n in range(200)]
    assert search_seed(0, "rotated-mnist/CNN", 0) != search_seed(0, "rotated-mnist/STN-C1", 0) != search_seed(1, "rotated-mnist/STN-C1", 0)


@pytest.mark.parametrize("kind,cls", [("tpe", optuna.samplers.TPESampler), ("gp", optuna.samplers.GPSampler),
                                      ("random", optuna.samplers.RandomSampler)])
def test_the_sampler_is_seeded_by_cell_and_by_the_trials_held(kind, cls):
    cfg = load("smoke", overrides={"sampler": kind, "n_startup_trials": 1})

    def draws(held):
        study = optuna.create_study(sampler=make_sampler(cfg, "rotated-mnist/CNN", held))
        return [study.ask().suggest_float("x", 0, 1) for _ in range(3)]  # the start-up draws: random for every kind

    assert type(make_sampler(cfg, "rotated-mnist/CNN")) is cls
    assert draws(0) == draws(0) and draws(0) != draws(5)  # a resumed search does not replay the first session


@pytest.mark.parametrize("kind,cls", [("asha", optuna.pruners.SuccessiveHalvingPruner),
                                      ("median", optuna.pruners.MedianPruner), ("none", optuna.pruners.NopPruner)])
def test_the_configured_pruner(kind, cls):
    pruner = make_pruner(load("smoke", overrides={"pruner": kind, "grace_period": 2, "reduction_factor": 4}))
    assert type(pruner) is cls
    if kind == "asha":
        assert pruner._min_resource == 2 and pruner._reduction_factor == 4

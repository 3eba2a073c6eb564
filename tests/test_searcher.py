"""Per-cell search with real Optuna: round-robin cells, seeded TPE, pruning only within a cell, and each
cell's final runs scheduled as soon as its search is over (which cell gets a slot: tests/test_slots.py)."""

import json
import pickle

import optuna
import pytest

from study.config import load
from study.search.searcher import PerCellSearcher, final_key


def config(**kw):
    base = {"variants": ["CNN", "STN-C1"], "trials_per_cell": 3, "epochs": 4, "pruner": "asha", "grace_period": 1,
            "reduction_factor": 2}
    return load("smoke", overrides={**base, **kw})


def test_round_robin_until_every_cell_has_its_trials():
    searcher = PerCellSearcher(config(final_seeds=[]))
    cells = [searcher.suggest(f"t{i}")["cell"] for i in range(6)]
    assert cells == ["rotated-mnist/CNN", "rotated-mnist/STN-C1"] * 3  # no trial time known yet: round-robin
    assert searcher.suggest("t6") == searcher.FINISHED


def test_suggestions_are_seeded_per_cell_and_inside_the_space():
    a = [PerCellSearcher(config(seed=3)).suggest("x")["lr"] for _ in range(2)]
    assert a[0] == a[1]
    cfg = config(seed=3)
    suggested = PerCellSearcher(cfg).suggest("x")
    assert cfg.search.lr.low <= suggested["lr"] <= cfg.search.lr.high
    assert suggested["stage"] == "search" and suggested["epochs"] == 4 and suggested["variant"] == "CNN"


def complete(searcher, trial_id, values, outcome="completed"):
    for step, value in enumerate(values, start=1):
        if searcher.should_prune(trial_id, step, value):
            searcher.pruned.add(trial_id)
            searcher.on_trial_complete(trial_id, {"val_error": value})
            return "pruned"
    searcher.on_trial_complete(trial_id, {"val_error": values[-1], "outcome": outcome})
    return outcome


def test_pruning_compares_only_within_a_cell():
    searcher = PerCellSearcher(config())
    ids = {}
    for i in range(6):
        ids.setdefault(searcher.suggest(f"t{i}")["cell"], []).append(f"t{i}")
    good, poor = ids["rotated-mnist/CNN"], ids["rotated-mnist/STN-C1"]
    assert complete(searcher, good[0], [0.10, 0.08, 0.06]) == "completed"
    # every STN-C1 configuration is far worse than the CNN's, yet its first trial is not pruned
    assert complete(searcher, poor[0], [0.90, 0.88, 0.87]) == "completed"
    assert complete(searcher, poor[1], [0.95, 0.94, 0.93]) == "pruned"  # worse than its own cell's best
    assert complete(searcher, poor[2], [0.85, 0.80, 0.70]) == "completed"
    counts = searcher.counts()
    assert counts["rotated-mnist/STN-C1"] == {"running": 0, "complete": 2, "pruned": 1, "fail": 0}
    assert searcher.best_per_cell()["rotated-mnist/STN-C1"]["val_error"] == 0.70


def test_diverged_and_errored_trials_fail_and_best_is_chosen_on_val_only():
    searcher = PerCellSearcher(config(variants=["CNN"]))
    for i in range(3):
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t0", {"val_error": 0.2, "test_error": 0.5, "outcome": "completed"})
    searcher.on_trial_complete("t1", {"val_error": 0.3, "test_error": 0.1, "outcome": "completed"})
    searcher.on_trial_complete("t2", {"outcome": "diverged"})
    study = searcher.studies["rotated-mnist/CNN"]
    assert [t.state for t in study.trials][2] == optuna.trial.TrialState.FAIL
    best = searcher.best_per_cell()["rotated-mnist/CNN"]
    assert best["tune_trial_id"] == "t0" and best["val_error"] == 0.2  # not t1, whose test error is lower


def test_state_survives_save_and_restore(tmp_path):
    searcher = PerCellSearcher(config(), tmp_path / "study")
    searcher.suggest("t0")
    searcher.suggest("t1")
    assert not searcher.should_prune("t0", 1, 0.5)
    searcher.save(str(tmp_path / "searcher-state"))
    assert json.loads((tmp_path / "searcher-state").read_text())["live"]["t0"] == ["rotated-mnist/CNN", 0]
    restored = pickle.loads(pickle.dumps(searcher))  # what Tuner.restore does: unpickle, then restore the state
    restored.restore(str(tmp_path / "searcher-state"))
    assert not restored.should_prune("t0", 2, 0.4)  # the live trial is reachable again
    restored.on_trial_complete("t0", {"val_error": 0.4, "outcome": "completed"})
    assert restored.counts()["rotated-mnist/CNN"]["complete"] == 1
    assert restored.suggest("t2")["cell"] == "rotated-mnist/CNN"  # the round-robin carries on


def finish(searcher, trial_id, seconds, value=0.5):
    searcher.on_trial_complete(trial_id, {"val_error": value, "outcome": "completed", "trial_seconds": seconds})


@pytest.mark.parametrize("overlap", [True, False])
def test_a_cells_final_runs_start_once_its_search_is_over(overlap):
    searcher = PerCellSearcher(config(variants=["CNN", "STN-C1"], trials_per_cell=2, final_seeds=[0, 1],
                                      overlap_final=overlap))
    ids = {}
    for i in range(4):
        ids.setdefault(searcher.suggest(f"t{i}")["cell"], []).append(f"t{i}")
    cnn, stn = ids["rotated-mnist/CNN"], ids["rotated-mnist/STN-C1"]
    finish(searcher, cnn[0], 5.0, value=0.3)
    assert searcher.suggest("w") is (None if overlap else searcher.FINISHED)  # CNN still has a trial running
    if not overlap:
        return
    finish(searcher, cnn[1], 5.0, value=0.2)
    finals = [searcher.suggest(f"f{seed}") for seed in (0, 1)]
    assert [(f["stage"], f["cell"], f["seed"]) for f in finals] == [("final", "rotated-mnist/CNN", 0),
                                                                     ("final", "rotated-mnist/CNN", 1)]
    best = searcher.best_per_cell()["rotated-mnist/CNN"]
    assert all(f["selected_from"] == best["trial_number"] and f["lr"] == best["hparams"]["lr"] for f in finals)
    assert searcher.suggest("w") is None  # STN-C1 is still searching; CNN's finals are all out
    assert not searcher.should_prune("f0", 1, 0.99)  # a final run is never pruned, nor told to Optuna
    finish(searcher, "f0", 9.0)
    searcher.on_trial_complete("f1", None, error=True)  # Tune gave up on it: the final stage tries again
    assert searcher.counts()["rotated-mnist/CNN"] == {"running": 0, "complete": 2, "pruned": 0, "fail": 0}
    assert {k[1] for k in searcher.finals_done} == {"0"}
    finish(searcher, stn[0], 5.0)
    finish(searcher, stn[1], 5.0)
    assert [searcher.suggest(f"g{seed}")["cell"] for seed in (0, 1)] == ["rotated-mnist/STN-C1"] * 2
    assert searcher.suggest("end") == searcher.FINISHED
    searcher.on_trial_complete("g0", {"outcome": "diverged", "val_error": 1.0})  # would diverge again: done
    finish(searcher, "g1", 9.0)
    assert {k[0] for k in searcher.finals_done if k[1] == "0"} == {"rotated-mnist/CNN", "rotated-mnist/STN-C1"}


def test_an_extension_gets_every_search_trial_within_tunes_sample_cap(tmp_path):
    """Tune stops asking after ``num_samples``: finals of an earlier best must not use up search samples."""
    cfg = config(variants=["CNN", "STN-C1"], trials_per_cell=1, final_seeds=[0])
    searcher = PerCellSearcher(cfg, tmp_path / "study")
    for i in range(4):  # one search trial per cell, then each cell's final
        searcher.suggest(f"a{i}")
        finish(searcher, f"a{i}", 5.0, value=0.5 - 0.1 * i)
    extended = PerCellSearcher(config(variants=["CNN", "STN-C1"], trials_per_cell=3, final_seeds=[0]),
                               tmp_path / "study")
    extended.start_new_run()
    cap, stages = extended.remaining() + extended.finals_bound(), []
    for i in range(cap):  # a new best in each cell: its final runs again
        suggestion = extended.suggest(f"b{i}")
        if suggestion is None or suggestion == extended.FINISHED:
            break
        stages.append(suggestion["stage"])
        finish(extended, f"b{i}", 5.0, value=0.01 * (i + 1))
    assert stages.count("search") == 4 and extended.remaining() == 0  # every search trial ran
    assert stages.count("final") == 2 and extended.suggest("end") == extended.FINISHED


def test_final_runs_in_flight_survive_save_and_restore_and_are_rescheduled_if_lost(tmp_path):
    searcher = PerCellSearcher(config(variants=["CNN"], trials_per_cell=1, final_seeds=[0]), tmp_path / "study")
    searcher.suggest("t0")
    finish(searcher, "t0", 5.0)
    final = searcher.suggest("f0")
    searcher.save(str(tmp_path / "searcher-state"))
    restored = pickle.loads(pickle.dumps(searcher))
    restored.restore(str(tmp_path / "searcher-state"))  # Tuner.restore: the final run carries on
    assert restored.final_live == {"f0": final_key(final)} and restored.suggest("x") == restored.FINISHED
    lost = PerCellSearcher(config(variants=["CNN"], trials_per_cell=1, final_seeds=[0]), tmp_path / "study")
    lost.start_new_run()  # a Tune run that ended without it: start it again
    assert lost.final_live == {} and lost.suggest("f1") == final  # the same final run, once more
    restored.on_trial_complete("f0", {"outcome": "completed", "val_error": 0.1})
    assert restored.finals_done == {final_key(final)} and restored.suggest("y") == restored.FINISHED


def test_search_trials_never_share_a_seed_with_final_runs_and_keep_theirs_on_extension(tmp_path):
    from study.config import FINAL_SEED_LIMIT
    from study.search.samplers import search_seed

    cfg = config(variants=["CNN", "STN-C1"], trials_per_cell=2, final_seeds=[0, 1])
    searcher, search, finals = PerCellSearcher(cfg, tmp_path / "study"), {}, []
    for i in range(8):  # two search trials per cell, then each cell's two final runs
        suggestion = searcher.suggest(f"t{i}")
        if suggestion["stage"] == "search":
            search[(suggestion["cell"], suggestion["trial_number"])] = suggestion["seed"]
        else:
            finals.append(suggestion["seed"])
        finish(searcher, f"t{i}", 5.0, value=0.5 - 0.01 * i)
    assert sorted(finals) == [0, 0, 1, 1] and all(s >= FINAL_SEED_LIMIT for s in search.values())
    assert len(set(search.values())) == len(search) == 4  # every search trial its own seed
    assert not set(search.values()) & set(finals)
    assert all(seed == search_seed(cfg.seed, cell, n) for (cell, n), seed in search.items())
    extended = PerCellSearcher(config(variants=["CNN", "STN-C1"], trials_per_cell=3, final_seeds=[0, 1]),
                               tmp_path / "study")  # a resume or extension: the recorded studies go on numbering
    more = extended.suggest("x")
    assert more["trial_number"] == 2 and more["seed"] == search_seed(cfg.seed, more["cell"], 2)
    assert more["seed"] not in search.values()
    again = PerCellSearcher(cfg).suggest("y")  # a fresh study from the same config: the same first seed
    assert again["seed"] == search[(again["cell"], 0)]


@pytest.mark.parametrize("kind,cls", [("tpe", optuna.samplers.TPESampler), ("gp", optuna.samplers.GPSampler),
                                      ("random", optuna.samplers.RandomSampler)])
def test_the_configured_sampler_is_built_per_cell_and_survives_an_extension(kind, cls, tmp_path):
    cfg = config(variants=["CNN"], trials_per_cell=2, final_seeds=[], sampler=kind, n_startup_trials=1)
    searcher = PerCellSearcher(cfg, tmp_path / "study")
    sampler = searcher.studies["rotated-mnist/CNN"].sampler
    assert type(sampler) is cls and getattr(sampler, "_n_startup_trials", 1) == 1
    for i in range(2):  # the second trial is the model's (tpe/gp), after one random start-up trial
        suggestion = searcher.suggest(f"t{i}")
        assert cfg.search.lr.low <= suggestion["lr"] <= cfg.search.lr.high
        finish(searcher, f"t{i}", 5.0, value=0.5 - 0.1 * i)
    extended = PerCellSearcher(config(variants=["CNN"], trials_per_cell=3, final_seeds=[], sampler=kind,
                                      n_startup_trials=1), tmp_path / "study")
    assert type(extended.studies["rotated-mnist/CNN"].sampler) is cls
    assert extended.suggest("t2")["stage"] == "search"


def test_without_a_search_every_cell_finals_train_the_fixed_recipe():
    cfg = load("quick", overrides={"variants": ["CNN", "STN-SL1"]})
    searcher = PerCellSearcher(cfg)
    assert searcher.remaining() == 0  # no search trial: the runner skips the search run
    configs = [c for key in searcher.cells for c in searcher.final_configs(key)]
    assert len(configs) == 2 * len(cfg.final_seeds) and {c["stage"] for c in configs} == {"final"}
    assert all(c["lr"] == 1e-3 and c["loc_lr_mult"] == 1.0 and c["optimizer"] == "adam" for c in configs)
    assert all("selected_from" not in c for c in configs)  # selected from no trial: the tag is left out

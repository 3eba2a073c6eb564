"""Per-cell search with real Optuna: round-robin cells, seeded TPE, pruning only within a cell."""

import optuna

from study.config import load
from study.space import PerCellSearcher


def config(**kw):
    base = {"variants": ["CNN", "STN-C1"], "trials_per_cell": 3, "epochs": 4, "pruner": "asha", "grace_period": 1,
            "reduction_factor": 2}
    return load("smoke", overrides={**base, **kw})


def test_round_robin_until_every_cell_has_its_trials():
    searcher = PerCellSearcher(config())
    cells = [searcher.suggest(f"t{i}")["cell"] for i in range(6)]
    assert cells == ["rotated-mnist/CNN", "rotated-mnist/STN-C1"] * 3
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
    searcher = PerCellSearcher(config())
    searcher.suggest("t0")
    searcher.suggest("t1")
    assert not searcher.should_prune("t0", 1, 0.5)
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = PerCellSearcher(config())
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert not restored.should_prune("t0", 2, 0.4)  # the live trial is reachable again
    restored.on_trial_complete("t0", {"val_error": 0.4, "outcome": "completed"})
    assert restored.counts()["rotated-mnist/CNN"]["complete"] == 1
    assert restored.suggest("t2")["cell"] == "rotated-mnist/CNN"  # the round-robin carries on

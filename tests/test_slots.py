"""Which cell gets a free slot (``study.search.slots``), through the searcher that asks it, on real Optuna:
the cell that would end last, with trial times from ended trials or, before one ended, from running
trials' pace."""

from test_searcher import config, finish

from study.search.searcher import PerCellSearcher


def test_a_free_slot_goes_to_the_cell_with_the_most_work_left():
    searcher = PerCellSearcher(config(trials_per_cell=4, final_seeds=[0], final_epochs=8))  # finals: 2 × epochs
    first = {searcher.suggest(t)["cell"]: t for t in ("a", "b")}
    finish(searcher, first["rotated-mnist/CNN"], 10.0)
    finish(searcher, first["rotated-mnist/STN-C1"], 30.0)
    # work left: CNN 10 s × (3 trials + 1 final × 2) = 50 s, STN-C1 30 s × 5 = 150 s
    assert searcher.remaining_work("rotated-mnist/CNN", []) == 50.0
    assert searcher.remaining_work("rotated-mnist/STN-C1", []) == 150.0
    cells = [searcher.suggest(f"t{i}")["cell"] for i in range(6)]
    assert cells == ["rotated-mnist/STN-C1"] * 3 + ["rotated-mnist/CNN"] * 3  # the long cell's trials first


def test_a_cell_unmeasured_yet_counts_as_the_longest_known():
    searcher = PerCellSearcher(config(trials_per_cell=3, final_seeds=[]))
    first = {searcher.suggest(t)["cell"]: t for t in ("a", "b")}
    finish(searcher, first["rotated-mnist/CNN"], 10.0)  # STN-C1's first trial is still running
    assert searcher.remaining_work("rotated-mnist/STN-C1", []) >= searcher.remaining_work("rotated-mnist/CNN", [])
    assert searcher.suggest("c")["cell"] == "rotated-mnist/CNN"  # a tie: fewest trials, then config order


def test_a_slow_cell_is_seen_as_slow_from_its_first_epochs_not_its_first_trials_end():
    searcher = PerCellSearcher(config(trials_per_cell=3, final_seeds=[], epochs=10))
    first = {searcher.suggest(t)["cell"]: t for t in ("a", "b")}
    searcher.on_trial_result(first["rotated-mnist/CNN"], {"epoch": 2, "time_total_s": 2.0})  # 1 s per epoch
    searcher.on_trial_result(first["rotated-mnist/STN-C1"], {"epoch": 1, "time_total_s": 3.0})  # 3 s per epoch
    # 2 trials still to start at the projected time, plus what the running one has left
    assert searcher.remaining_work("rotated-mnist/CNN", []) == 10.0 * 2 + 8 * 1.0
    assert searcher.remaining_work("rotated-mnist/STN-C1", []) == 30.0 * 2 + 9 * 3.0
    assert searcher.suggest("c")["cell"] == "rotated-mnist/STN-C1"  # before either trial ended
    finish(searcher, first["rotated-mnist/STN-C1"], 25.0)  # an ended trial's own time replaces the projection
    assert searcher.remaining_work("rotated-mnist/STN-C1", []) == 25.0 * 1


def test_a_cell_whose_search_still_runs_gets_the_slot_when_its_work_left_with_the_running_trial_is_more():
    """Its final run must wait for its running trial: what that trial has left counts as work left."""
    searcher = PerCellSearcher(config(trials_per_cell=3, final_seeds=[0], epochs=10))
    first = {searcher.suggest(t)["cell"]: t for t in ("a", "b")}
    finish(searcher, first["rotated-mnist/CNN"], 25.0)
    searcher.on_trial_result(first["rotated-mnist/STN-C1"], {"epoch": 1, "time_total_s": 3.0})
    assert searcher.suggest("c")["cell"] == "rotated-mnist/STN-C1"
    finish(searcher, first["rotated-mnist/STN-C1"], 30.0)
    searcher.on_trial_result("c", {"epoch": 5, "time_total_s": 20.0})  # 4 s per epoch: 20 s still to run
    assert searcher.remaining_work("rotated-mnist/CNN", []) == 25.0 * (2 + 1)  # 2 trials + its final run
    assert searcher.remaining_work("rotated-mnist/STN-C1", []) == 30.0 * (1 + 1) + 20.0  # 60 alone would lose
    assert searcher.suggest("d")["cell"] == "rotated-mnist/STN-C1"


def test_a_long_final_run_ready_now_goes_before_more_but_shorter_trials_of_another_cell():
    """Two slots: CNN's 48 s of 12 s pieces can end in 24 s, STN-C1's one 40 s final run cannot be split."""
    searcher = PerCellSearcher(config(trials_per_cell=4, final_seeds=[0], epochs=10))
    first = {searcher.suggest(t)["cell"]: t for t in ("a", "b")}
    finish(searcher, first["rotated-mnist/CNN"], 12.0)
    finish(searcher, first["rotated-mnist/STN-C1"], 40.0)
    for t in ("c", "d", "e"):  # STN-C1 would end last: its search goes first, and ends
        assert searcher.suggest(t)["cell"] == "rotated-mnist/STN-C1"
        finish(searcher, t, 40.0)
    ready = searcher._finals_ready("rotated-mnist/STN-C1", searcher.best_per_cell())
    assert len(ready) == 1
    # by work left alone CNN would win: 12 s × (3 trials + 1 final) = 48 s against 40 s
    assert searcher.remaining_work("rotated-mnist/CNN", []) == 48.0
    assert searcher.remaining_work("rotated-mnist/STN-C1", ready) == 40.0
    assert searcher.time_to_finish("rotated-mnist/CNN", []) == 24.0  # 48 s over 2 slots; chain 12 + 12
    assert searcher.time_to_finish("rotated-mnist/STN-C1", ready) == 40.0
    assert searcher.suggest("f")["stage"] == "final"

"""``study.report.data``: which runs stand for a cell, the table rows' order and the failure counts (on plain frames)."""

import pandas as pd

from study.report.data import failure_counts, out_dir_for, reported_runs, resolve_row, row_label, row_order, superseded_finals


def runs_frame(*rows):
    """Runs as ``load_runs`` flattens them: (row, stage, outcome, val_error, test_error, trial, hparams_hash)."""
    return pd.DataFrame([{"run_id": f"r{i}", "param.dataset": "rotated-mnist", "cell": f"rotated-mnist/{row}", "row": row,
                          "stage": stage, "outcome": outcome, "val_error": val, "test_error": test,
                          "param.trial_number": str(trial), "hparams_hash": digest}
                         for i, (row, stage, outcome, val, test, trial, digest) in enumerate(rows)])


def test_a_cell_is_its_finals_else_its_val_best_search_trial_never_its_test_best():
    runs = runs_frame(("CNN", "search", "completed", 0.20, 0.10, 0, None),
                      ("CNN", "search", "completed", 0.10, 0.30, 1, None),
                      ("CNN", "search", "pruned", 0.05, 0.05, 2, None),
                      ("STN-C1", "search", "completed", 0.10, 0.10, 0, None),
                      ("STN-C1", "search", "completed", 0.10, 0.20, 1, None),  # a tie on val: the earlier trial
                      ("STN-C1", "final", "completed", 0.09, 0.08, 0, None),
                      ("STN-C1", "final", "diverged", 1.00, None, 0, None),
                      ("STN-SL1", "search", "diverged", 1.0, None, 0, None),
                      ("STN-SL1", "search", "failed", 1.0, None, 1, None))
    cnn, basis = reported_runs(runs, "rotated-mnist", "CNN")
    assert basis == "val-best search trial" and cnn["test_error"].tolist() == [0.30]
    c1, basis = reported_runs(runs, "rotated-mnist", "STN-C1")
    assert basis == "final" and c1["run_id"].tolist() == ["r5"]
    none, basis = reported_runs(runs, "rotated-mnist", "STN-SL1")
    assert none.empty and basis == "no completed trial (2 diverged/failed)"
    assert reported_runs(runs, "rotated-mnist", "STN-DL1")[1] == "not in this study"
    assert failure_counts(runs) == {"rotated-mnist/STN-C1": {"diverged": 1},
                                    "rotated-mnist/STN-SL1": {"diverged": 1, "failed": 1}}


def test_finals_of_a_superseded_best_are_not_reported_but_listed():
    runs = runs_frame(("CNN", "search", "completed", 0.20, 0.2, 0, "old"),
                      ("CNN", "search", "completed", 0.10, 0.1, 1, "new"),
                      ("CNN", "final", "completed", 0.2, 0.5, 0, "old"),
                      ("CNN", "final", "completed", 0.1, 0.04, 1, "new"),
                      ("CNN", "final", "completed", 0.1, 0.06, 1, "new"))
    finals, basis = reported_runs(runs, "rotated-mnist", "CNN")
    assert basis == "final" and sorted(finals["test_error"]) == [0.04, 0.06]
    assert superseded_finals(runs)["run_id"].tolist() == ["r2"]


def test_row_labels_and_the_report_directory(tmp_path):
    assert row_label("CNN", "rotation") == "CNN" and row_label("STN-C1", "affine") == "STN-C1"
    assert row_label("STN-C1", "rotation") == "STN-C1 [rotation]"
    assert out_dir_for("s-1", str(tmp_path)) == tmp_path and out_dir_for("s-1", None).parts[-2:] == ("reports", "s-1")


def test_rows_keep_the_paper_order_and_a_compared_variant_finds_its_parameterised_row():
    labels = ["STN-C1 [rotation]", "CNN", "STN-SL1 [rotation]", "STN-C0 [rotation]", "STN-DL1 [rotation]", "STN-SL1x2"]
    assert row_order(labels) == ["CNN", "STN-C0 [rotation]", "STN-C1 [rotation]", "STN-SL1 [rotation]",
                                 "STN-DL1 [rotation]", "STN-SL1x2"]
    assert resolve_row(labels, "STN-SL1") == "STN-SL1 [rotation]"
    assert resolve_row(["STN-SL1", "STN-SL1 [rotation]"], "STN-SL1") == "STN-SL1"  # the exact row wins
    assert resolve_row(["STN-SL1 [rotation]", "STN-SL1 [similarity]"], "STN-SL1") == "STN-SL1"  # ambiguous: no guess

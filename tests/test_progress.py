"""``study.progress``: the block printed for a known sequence of Tune events (real Tune trial objects, not scheduled: no Ray)."""

import io
import pickle

import pytest
from ray.tune.experiment import Trial

from study import progress
from study.progress import Progress, _fmt_seconds


def trial(trial_id, cell, stage="search", last=None):
    """A real Tune trial object (a stub: not scheduled), with its last result."""
    made = Trial("train_cell", config={"cell": cell, "stage": stage}, trial_id=trial_id, stub=True)
    made.run_metadata.last_result = last or {}
    return made


def test_seconds_are_shown_as_hours_minutes_seconds():
    assert _fmt_seconds(0) == "0:00:00" and _fmt_seconds(3725.9) == "1:02:05" and _fmt_seconds(-5) == "0:00:00"
    assert _fmt_seconds(100 * 3600) == "100:00:00"


def test_a_known_sequence_of_results_prints_these_lines(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    p = Progress("search", ["r/CNN", "r/STN-C1"], total_trials=4, epochs_per_trial=2, every=15.0, stream=out)
    a, b, c = trial("a", "r/CNN"), trial("b", "r/CNN"), trial("c", "r/STN-C1")
    early = trial("f", "r/CNN", stage="final")  # a final run started in a search slot: a row of its own
    for t in (a, b, c, early):
        p.on_trial_start(0, [], t)
    assert p.eta() is None
    p.on_trial_result(0, [], a, {"epoch": 1, "val_error": 0.30})
    p.on_trial_result(0, [], a, {"epoch": 2, "val_error": 0.25})
    p.on_trial_result(0, [], a, {"outcome": "completed", "val_error": 0.2})
    p.on_trial_result(0, [], b, {"epoch": 1, "val_error": 0.5})
    p.on_trial_result(0, [], c, {"outcome": "completed", "val_error": 0.1})  # a result without epoch: not counted
    now[0] = 1030.0
    assert p.eta() == pytest.approx(30.0 / 3 * (4 * 2 - 3))  # 3 epochs in 30 s, 5 to go
    a.run_metadata.last_result = {"outcome": "completed"}
    p.on_trial_complete(0, [], a)
    p.on_trial_complete(0, [], b)  # no outcome in its last result: the scheduler pruned it
    p.on_trial_error(0, [], c)
    lines = out.getvalue().splitlines()
    assert lines[-4:] == [
        # 6 epochs counted (a pruned or failed trial frees its remaining ones) in 30 s; 8 - 6 to go: 10 s
        "[search] 3/4 trials done  elapsed 0:00:30  ETA 0:00:10",
        "  r/CNN                            running 0  done 1  pruned 1  failed 0  best val 20.0%",
        "  r/STN-C1                         running 0  done 0  pruned 0  failed 1  best val 10.0%",
        "  r/CNN final                      running 1  done 0  pruned 0  failed 0  best val —",
    ]
    assert len(lines) == 12  # one block per ended trial
    now[0] = 1040.0
    p.on_step_end(0, [])  # 10 s since the last block: nothing
    assert len(out.getvalue().splitlines()) == 12
    now[0] = 1045.0
    p.on_step_end(0, [])
    assert len(out.getvalue().splitlines()) == 16


def test_it_pickles_without_its_stream():
    p = Progress("final", ["r/CNN"], 1, 1, stream=io.StringIO())
    copy = pickle.loads(pickle.dumps(p))
    assert copy.stream is not None and copy.cells == ["r/CNN"]

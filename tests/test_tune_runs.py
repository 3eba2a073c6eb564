"""``study.tune_runs``: which unfinished Tune runs can be continued, and a run config that prints nothing of Tune's."""

import json
import os

from study.paths import StudyDir
from study.tune_runs import restorable, run_config


def test_only_a_saved_state_holding_trials_can_be_continued(tmp_path):
    directory = StudyDir(str(tmp_path), "s")
    (tmp_path / "s" / "search-1").mkdir(parents=True)
    assert not restorable(directory, "search-1")  # killed before Tune saved anything
    (tmp_path / "s" / "search-1" / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": []}))
    assert not restorable(directory, "search-1")  # saved before any trial started
    (tmp_path / "s" / "search-1" / "experiment_state-2026-01-01_00-00-01.json").write_text("{not json")
    assert not restorable(directory, "search-1")  # the newest is unreadable (a torn write)
    (tmp_path / "s" / "search-1" / "experiment_state-2026-01-01_00-00-02.json").write_text(
        json.dumps({"trial_data": [["{}", "{}"]]}))
    assert restorable(directory, "search-1")


def test_the_run_config_keeps_tunes_console_quiet_and_its_checkpoints_bounded(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    config = run_config("final-1", str(tmp_path), [])
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0" and config.verbose == 0
    assert config.checkpoint_config.num_to_keep is None and config.failure_config.max_failures == 2  # no forced snapshots
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "1")  # a user's own choice is kept
    run_config("final-2", str(tmp_path), [])
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "1"

"""``study.state``: a study's record round-trips, studies are listed newest first and found by id or name."""

import json
import time

import pytest

from study.state import STATE_FILE, StudyNotFound, StudyState, all_states, find_state, read_deadline, study_dir, write_deadline


def state(study_id, name, created):
    return StudyState(study_id=study_id, name=name, config_yaml="name: x\n", tracking_uri="sqlite:///m.db",
                      experiment_id="1", parent_run_id="p", created=created)


def test_a_state_round_trips_with_every_field(tmp_path):
    saved = state("s-1", "paper", 100.0)
    saved.status, saved.search_runs, saved.search_complete = "interrupted", ["search-1", "search-2"], [True, False]
    saved.save(study_dir(tmp_path, "s-1"))
    assert StudyState.load(tmp_path / "s-1") == saved
    assert json.loads((tmp_path / "s-1" / STATE_FILE).read_text())["search_complete"] == [True, False]


def test_studies_are_listed_newest_first_and_directories_that_are_not_studies_are_skipped(tmp_path):
    for study_id, name, created in (("a-1", "a", 10.0), ("b-1", "b", 30.0), ("a-2", "a", 20.0)):
        state(study_id, name, created).save(study_dir(tmp_path, study_id))
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / STATE_FILE).write_text("{not json")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / STATE_FILE).write_text('{"unexpected": 1}')
    assert [s.study_id for s in all_states(tmp_path)] == ["b-1", "a-2", "a-1"]
    assert find_state(tmp_path, None).study_id == "b-1"  # the latest by default
    assert find_state(tmp_path, "a").study_id == "a-2"  # a name: its latest launch
    assert find_state(tmp_path, "a-1").study_id == "a-1"
    with pytest.raises(StudyNotFound, match=r"unknown study 'c': studies under .*: b-1, a-2, a-1$"):
        find_state(tmp_path, "c")
    with pytest.raises(StudyNotFound, match="no studies under"):
        find_state(tmp_path / "nothing", None)


def test_the_deadline_is_written_read_and_cleared(tmp_path):
    directory = study_dir(tmp_path, "s")
    before = time.time()
    deadline = write_deadline(directory, 0.5)
    assert before + 1800 <= deadline <= time.time() + 1800 and read_deadline(directory) == deadline
    assert write_deadline(directory, None) is None and read_deadline(directory) is None
    assert read_deadline(None) is None
    directory.write_text("deadline", "soon")
    assert read_deadline(directory) is None  # unreadable: no deadline rather than a crash

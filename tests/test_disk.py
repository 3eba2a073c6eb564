"""``study.disk`` on a real directory: the launch check and the ``DiskGuard`` that stops a running study."""

import os
import signal
from pathlib import Path

import pytest

from study import disk
from study.disk import DiskGuard, DiskSpaceError, check_free_space, free_gb, short_of_space

HUGE = 1e12  # GB: more than any disk


def test_free_space_of_a_path_not_made_yet_is_that_of_its_nearest_existing_parent(tmp_path):
    assert free_gb(tmp_path / "not" / "yet") == pytest.approx(free_gb(tmp_path), rel=0.01)
    assert not (tmp_path / "not").exists()


def test_the_launch_check_names_the_first_short_path_in_one_line(tmp_path):
    check_free_space([tmp_path], 0.0)
    assert short_of_space([tmp_path, tmp_path / "b"], 0.0) is None
    path, free = short_of_space([tmp_path / "a", tmp_path / "b"], HUGE)
    assert path == tmp_path / "a" and 0 <= free < HUGE
    with pytest.raises(DiskSpaceError) as err:
        check_free_space([tmp_path], HUGE)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message and "min_free_gb is 1e+12" in message
    assert not err.value.resumable


def test_the_guard_stops_the_study_like_ctrl_c_once_and_says_how_to_resume(tmp_path, monkeypatch):
    sent = []
    monkeypatch.setattr(disk.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    quiet = DiskGuard([tmp_path], 0.0)  # min_free_gb 0: never checked
    quiet.on_trial_result(1, [], None, {})
    assert DiskGuard.tripped is None and not sent
    guard = DiskGuard([str(tmp_path)], HUGE)
    guard.on_trial_result(1, [], None, {})
    guard.on_trial_result(2, [], None, {})  # already tripped: no second interrupt
    assert sent == [(os.getpid(), signal.SIGINT)]
    assert DiskGuard.tripped[0] == Path(tmp_path)
    err = guard.error("my-study-1")
    assert err.resumable and "\n" not in str(err) and str(err).endswith("python -m study.launch --resume my-study-1")
    DiskGuard([tmp_path], HUGE)  # a new guard (a new Tune run) starts untripped
    assert DiskGuard.tripped is None

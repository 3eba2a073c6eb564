"""The driver's SIGTERM/SIGHUP handler on its own (the real stops are in ``test_resume.py``)."""

import os
import signal
import time

import pytest

from study.signals import STOP, fit, graceful_stop


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_is_a_keyboard_interrupt_with_its_own_exit_code(sig, code):
    before = signal.signal(sig, signal.SIG_DFL)  # as in a terminal, also when the tests run under nohup
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's, whatever ran before in this process
    try:
        with pytest.raises(KeyboardInterrupt), graceful_stop():
            os.kill(os.getpid(), sig)
            time.sleep(0.1)  # the handler runs meanwhile
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert STOP.exit_code(130) == code
    assert signal.signal(sig, before) == signal.SIG_DFL  # handed back


def test_the_signal_goes_to_whatever_handles_sigint_now():
    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))  # as Tune's does
    try:
        with graceful_stop():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [signal.SIGINT] and STOP.exit_code() == 143


def test_a_signal_during_a_tune_run_stops_the_study_and_sigint_is_handed_back():
    class Tuner:  # stands in for tune.Tuner: installs a handler that only sets a flag, and keeps it
        def fit(self):
            signal.signal(signal.SIGINT, lambda signum, frame: None)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
            return "results"

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), graceful_stop():
        fit(Tuner())
    assert signal.getsignal(signal.SIGINT) == before


def test_an_ignored_sighup_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup
    try:
        with graceful_stop():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)

"""Interruptions on real Ray, Optuna and MLflow: driver SIGKILL, Ctrl-C, SIGTERM/SIGHUP, time budget, extension.

Each launch is a real ``python -m study.launch`` process with its own local Ray instance; what a resume
may change, and that the change is recorded first, is checked without Ray on a study's record alone.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import epochs_logged, saved_study
from mlflow.tracking import MlflowClient

from study import launch as launcher
from study.launch import study_listing
from study.report.data import load_study
from study.state import find_state

BASE = ["--name", "resumable", "--variants", "CNN", "--epochs", "4", "--train-size", "256", "--set", "test_passes=1",
        "--set", "grace_period=10", "--max-concurrent", "1", "--cpus-per-trial", "1", "--quiet"]


def hangup_as_a_terminal_would():
    """A driver started from a shell: under ``nohup`` the tests would inherit an ignored SIGHUP, which it keeps."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def launch(tmp: Path, *extra, wait=True, timeout=300):
    # Ray's socket paths must stay under 107 bytes: a short temp dir, not pytest's long one
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp"), "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "study.launch", *BASE, "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}",
           "--storage-path", str(tmp / "tune"), *extra]
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=hangup_as_a_terminal_would)
    if wait:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    return proc


def runs(tmp: Path):
    study = load_study(MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}"), "resumable")
    return study, study.runs


def completed_epochs(tmp: Path) -> int:
    """Epochs logged so far across the study's runs (0 until the store exists)."""
    if not list((tmp / "tune").glob("*/study.json")):
        return 0  # the launcher has not created its store yet: opening it now would race its migration
    return epochs_logged(f"sqlite:///{tmp / 'mlflow.db'}", "resumable")


def wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"launch ended early ({proc.returncode}): {proc.stdout.read()[-3000:]}")
        time.sleep(0.5)
    raise TimeoutError("condition not reached")


def kill_tree(proc, sig):
    os.killpg(proc.pid, sig)


def trial_ids_unique(frame):
    return frame["trial_id"].is_unique


def test_driver_sigkill_then_resume_loses_and_repeats_nothing(tmp_path):
    proc = launch(tmp_path, "--trials-per-cell", "3", "--final-seeds", "0", wait=False)
    wait_for(lambda: completed_epochs(tmp_path) >= 5, proc)  # mid-search: one trial done, another running
    started = time.monotonic()
    kill_tree(proc, signal.SIGKILL)
    proc.wait(timeout=30)
    code, out = launch(tmp_path, "--resume")
    assert code == 0, out
    resumed_s = time.monotonic() - started
    study, frame = runs(tmp_path)
    search, final = frame[frame["stage"] == "search"], frame[frame["stage"] == "final"]
    assert len(search) == 3 and len(final) == 1 and trial_ids_unique(frame)
    assert not (frame["status"] == "RUNNING").any()
    assert set(search["outcome"]) <= {"completed", "pruned"}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(study.parent_run_id).info.status == "FINISHED"
    for run_id in search["run_id"]:  # every epoch logged once: nothing repeated after the restore
        steps = [m.step for m in client.get_metric_history(run_id, "val_error")]
        assert steps == sorted(set(steps))
    state = find_state(tmp_path / "tune", None)
    assert state.status == "finished" and state.search_runs == ["search-1"]
    print(json.dumps({"kill_to_finished_s": round(resumed_s, 1)}))


def test_a_trial_tunes_snapshot_never_saw_continues_after_a_sigkill_under_its_own_number_and_run(tmp_path,
                                                                                                 monkeypatch):
    """Tune saves its state on a timer, not before each trial: with the timer off it never saves during the run,
    so the trial running at the kill is one it does not know. The searcher suggests it again under its own
    Optuna number; it continues its own MLflow run from its resume state."""
    from test_faults import resumable_epoch

    from study.trial import RESUME_DIR

    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "100000000")  # the launched drivers inherit it
    proc = launch(tmp_path, "--trials-per-cell", "3", "--final-seeds", "0", "--epochs", "10", wait=False)

    def second_trial_midway() -> bool:  # a state, not a moment: trial 1 has epochs saved and ≥ 5 still to run
        return 1 <= max((resumable_epoch(f) for f in (tmp_path / "tune").glob(f"*/{RESUME_DIR}/*+search-1.pt")),
                        default=0) <= 5

    wait_for(second_trial_midway, proc)
    kill_tree(proc, signal.SIGKILL)
    proc.wait(timeout=30)
    code, out = launch(tmp_path, "--resume", "--epochs", "10")
    assert code == 0, out
    study, frame = runs(tmp_path)
    search = frame[frame["stage"] == "search"]
    assert len(search) == 3 and (frame["stage"] == "final").sum() == 1 and not (frame["status"] == "RUNNING").any()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    continued = client.search_runs([study.experiment_id], "tags.trial_key = 'rotated-mnist+CNN+search-1'")
    assert len(continued) == 1 and continued[0].info.status == "FINISHED"
    for run_id in search["run_id"]:  # every epoch of every trial once
        assert [m.step for m in client.get_metric_history(run_id, "val_error")] == list(range(1, 11))
    restored = [m.value for m in client.get_metric_history(continued[0].info.run_id, "restored_from_epoch")]
    assert max(restored) >= 1  # continued from its resume state, not trained again from the start
    assert find_state(tmp_path / "tune", None).status == "finished"


def test_driver_sigkill_during_an_early_final_run_then_resume_finishes_it_once(tmp_path):
    proc = launch(tmp_path, "--trials-per-cell", "2", "--final-seeds", "0", wait=False)
    wait_for(lambda: completed_epochs(tmp_path) >= 10, proc)  # 2 search trials × 4 epochs, the final run at epoch 2+
    kill_tree(proc, signal.SIGKILL)
    proc.wait(timeout=30)
    code, out = launch(tmp_path, "--resume")
    assert code == 0, out
    _, frame = runs(tmp_path)
    search, final = frame[frame["stage"] == "search"], frame[frame["stage"] == "final"]
    assert len(search) == 2 and len(final) == 1 and trial_ids_unique(frame)
    assert final.iloc[0]["outcome"] == "completed" and not (frame["status"] == "RUNNING").any()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    steps = [m.step for m in client.get_metric_history(final.iloc[0]["run_id"], "val_error")]
    assert steps == [1, 2, 3, 4]  # nothing lost, nothing logged twice
    restored = [m.value for m in client.get_metric_history(final.iloc[0]["run_id"], "restored_from_epoch")]
    print(json.dumps({"final_restored_from_epoch": max(restored)}))
    state = find_state(tmp_path / "tune", None)
    assert state.status == "finished" and state.search_runs == ["search-1"] and state.final_runs == []


def test_sigint_stops_gracefully_and_resumes(tmp_path):
    proc = launch(tmp_path, "--trials-per-cell", "2", "--final-seeds", "0", wait=False)
    wait_for(lambda: completed_epochs(tmp_path) >= 2, proc)
    kill_tree(proc, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "--resume" in out
    study, frame = runs(tmp_path)
    assert not (frame["status"] == "RUNNING").any()
    assert (frame.loc[frame["outcome"] == "killed", "status"] == "KILLED").all()
    assert find_state(tmp_path / "tune", None).status == "interrupted"
    code, out = launch(tmp_path, "--resume", study.study_id)
    assert code == 0, out
    _, frame = runs(tmp_path)
    assert (frame["stage"] == "search").sum() == 2 and (frame["stage"] == "final").sum() == 1
    assert set(frame["outcome"]) <= {"completed", "pruned"}  # the resumed trial's run was closed properly


@pytest.mark.parametrize("sig,code,group", [(signal.SIGTERM, 143, False), (signal.SIGHUP, 129, True)],
                         ids=["SIGTERM-to-the-driver", "SIGHUP-to-the-process-group"])
def test_sigterm_and_sighup_stop_like_ctrl_c_in_seconds_and_resume(tmp_path, sig, code, group):
    """docker stop / kubectl delete signal the driver alone; timeout, systemd and a closed terminal signal
    every process, the local Ray instance's too (which must outlive the driver's graceful stop)."""
    proc = launch(tmp_path, "--trials-per-cell", "2", "--final-seeds", "0", wait=False)
    wait_for(lambda: completed_epochs(tmp_path) >= 2, proc)  # a trial is running
    ray_processes = psutil.Process(proc.pid).children(recursive=True)
    started = time.monotonic()
    if group:
        kill_tree(proc, sig)
    else:
        proc.send_signal(sig)
    proc.wait(timeout=30)
    stopped_s = time.monotonic() - started
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == code and stopped_s < 15, (proc.returncode, stopped_s, out)
    assert "Traceback" not in out, out
    _, alive = psutil.wait_procs(ray_processes, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive  # nothing left behind
    study, frame = runs(tmp_path)
    assert f"resume with: python -m study.launch --resume {study.study_id}" in out
    assert find_state(tmp_path / "tune", None).status == "interrupted"
    assert not (frame["status"] == "RUNNING").any() and (frame["outcome"] == "killed").any()
    assert (frame.loc[frame["outcome"] == "killed", "status"] == "KILLED").all()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(study.parent_run_id).info.status == "KILLED"
    print(json.dumps({"signal": sig.name, "signal_to_exit_s": round(stopped_s, 1)}))
    if sig != signal.SIGTERM:
        return  # resuming is the same whichever signal stopped the study: once is enough
    code, out = launch(tmp_path, "--resume", study.study_id)
    assert code == 0, out
    _, frame = runs(tmp_path)
    assert (frame["stage"] == "search").sum() == 2 and (frame["stage"] == "final").sum() == 1
    assert set(frame["outcome"]) <= {"completed", "pruned"} and trial_ids_unique(frame)
    assert client.get_run(study.parent_run_id).info.status == "FINISHED"
    assert find_state(tmp_path / "tune", None).status == "finished"


def test_time_budget_then_extension_adds_exactly_what_was_asked(tmp_path):
    # 1.8 s of budget: Tune is barely up, so at most the first trial starts, never all three — on any machine
    code, out = launch(tmp_path, "--trials-per-cell", "3", "--final-seeds", "0", "--max-hours", "0.0005")
    assert code == 0, out
    state = find_state(tmp_path / "tune", None)
    assert state.status == "budget-exhausted"
    _, frame = runs(tmp_path)
    first = (frame["stage"] == "search").sum()
    assert first < 3 and (frame["stage"] == "final").sum() == 0
    assert not (frame["status"] == "RUNNING").any()
    code, out = launch(tmp_path, "--resume")  # no budget: finish the search and run the final stage
    assert code == 0, out
    _, frame = runs(tmp_path)
    assert (frame["stage"] == "search").sum() == 3 and (frame["stage"] == "final").sum() == 1
    code, out = launch(tmp_path, "--resume", "--trials-per-cell", "4", "--final-seeds", "0", "1")
    assert code == 0, out
    _, frame = runs(tmp_path)
    search, final = frame[frame["stage"] == "search"], frame[frame["stage"] == "final"]
    assert len(search) == 4 and trial_ids_unique(frame)
    saved = yaml.safe_load(find_state(tmp_path / "tune", None).config_yaml)
    assert saved["trials_per_cell"] == 4 and saved["final_seeds"] == [0, 1]  # the record is the extended study
    # seed 0 is rerun only if the extra trial changed the cell's best configuration
    assert sorted(final[final["outcome"] == "completed"]["seed"].astype(int).unique()) == [0, 1]
    assert "resumable" in study_listing(str(tmp_path / "tune"))


def test_extension_after_a_separate_final_stage_reruns_only_new_seeds(tmp_path):
    # the final stage as its own Tune run: the extension must find seed 0's run in MLflow, not in the searcher
    code, out = launch(tmp_path, "--trials-per-cell", "1", "--final-seeds", "0", "--set", "overlap_final=false")
    assert code == 0, out
    assert find_state(tmp_path / "tune", None).final_runs == ["final-1"]
    code, out = launch(tmp_path, "--resume", "--final-seeds", "0", "1")
    assert code == 0, out
    _, frame = runs(tmp_path)
    final = frame[frame["stage"] == "final"]
    assert sorted(final["seed"].astype(int)) == [0, 1] and (final["outcome"] == "completed").all()
    assert find_state(tmp_path / "tune", None).final_runs == ["final-1", "final-2"]


def test_resume_of_a_missing_study_is_one_line(tmp_path):
    code, out = launch(tmp_path, "--resume", "nope")
    assert code == 2
    assert out.strip().splitlines()[-1].startswith("error: resume: no studies under")


def test_bad_budget_is_rejected(tmp_path):
    code, out = launch(tmp_path, "--max-hours", "-1")
    assert code == 2 and "max_hours: must be a number > 0" in out


def test_killed_trial_worker_resumes_from_its_checkpoint(tmp_path):
    # 40 epochs of 256 digits: the kill lands with most of the trial still to run, whatever the machine's
    # speed, once the trial has the state it needs (its resume state at epoch 3 or later), not after a guessed moment
    from test_faults import resumable_epoch

    from study.trial import RESUME_DIR

    proc = launch(tmp_path, "--trials-per-cell", "1", "--epochs", "40", "--final-seeds", wait=False)
    # ... and the driver has taken three epochs' results (logged)
    wait_for(lambda: any(resumable_epoch(t) >= 3 for t in (tmp_path / "tune").glob(f"*/{RESUME_DIR}/*.pt"))
             and completed_epochs(tmp_path) >= 3, proc)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if "ImplicitFunc" in " ".join(p.cmdline())]  # this study's trial worker, no one else's
    assert workers
    for worker in workers:
        worker.kill()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    _, frame = runs(tmp_path)
    run = frame.iloc[0]
    assert len(frame) == 1 and run["outcome"] == "completed" and run["status"] == "FINISHED"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    restored = [m.value for m in client.get_metric_history(run["run_id"], "restored_from_epoch")]
    assert max(restored) >= 3  # restarted from a checkpoint at epoch >= 3: earlier epochs were not retrained
    assert max(restored) < 40  # ... and the kill came before the trial ended
    assert [m.step for m in client.get_metric_history(run["run_id"], "val_error")] == list(range(1, 41))


ALLOWED = ("allowed --trials-per-cell, --final-seeds, --max-concurrent, --cpus-per-trial, --gpus-per-trial, "
           "--tracking-uri, --storage-path")
FIXED = [(["--epochs", "7"], "--epochs"), (["--epochs", "0"], "--epochs"), (["--set", "epochs=7"], "--set epochs"),
         (["--seed", "3"], "--seed"), (["--variants", "CNN", "STN-C1"], "--variants"),
         (["--preset", "smoke"], "--preset"), (["--set", "search.lr.high=0.05"], "--set search.lr.high")]


@pytest.mark.parametrize("argv,flag", FIXED, ids=[" ".join(argv) for argv, _ in FIXED])
def test_a_resume_that_would_change_a_fixed_field_is_refused_and_nothing_changes(tmp_path, monkeypatch, capsys,
                                                                                 argv, flag):
    monkeypatch.chdir(tmp_path)
    study_id = saved_study(tmp_path / "tune")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert launcher.main(["--resume", study_id, "--storage-path", str(tmp_path / "tune"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"config error: {flag}: cannot be changed when resuming study {study_id}: {ALLOWED}"]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written


def test_an_extension_is_recorded_before_its_runs_so_an_interrupted_one_resumes_extended(tmp_path, monkeypatch):
    from study.driver import StudyDriver

    monkeypatch.chdir(tmp_path)
    storage = tmp_path / "tune"
    study_id = saved_study(storage)
    ran = []

    def execute(self):  # the extension is interrupted before any trial
        ran.append(self.cfg)
        raise KeyboardInterrupt

    monkeypatch.setattr(StudyDriver, "attach", lambda self, state: setattr(self, "state", state))
    monkeypatch.setattr(StudyDriver, "execute", execute)
    common = ["--resume", study_id, "--storage-path", str(storage), "--quiet"]
    # flags that repeat the saved values are not changes; the extension is
    assert launcher.main([*common, "--epochs", "2", "--name", "saved", "--trials-per-cell", "4",
                          "--final-seeds", "0", "1", "--set", "resources.cpus=2"]) == 130
    saved = yaml.safe_load(find_state(storage, study_id).config_yaml)
    assert (saved["trials_per_cell"], saved["final_seeds"], saved["resources"]["cpus"]) == (4, [0, 1], 2)
    assert saved["storage_path"] == str(storage) and saved["epochs"] == 2
    assert launcher.main(common) == 130  # a plain resume of it
    assert (ran[1].trials_per_cell, ran[1].final_seeds, ran[1].resources.cpus) == (4, [0, 1], 2)

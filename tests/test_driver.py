"""``study.driver``: one study's lifecycle on real Ray, Optuna and MLflow, with the load generator as its trial
(``study.bench.driver.load_trial``: the real trial's reports and checkpoints, no training), so it takes seconds."""

import json

from mlflow.tracking import MlflowClient

from study.bench.driver import DriverMeter, load_trial
from study.config import load
from study.driver import StudyDriver
from study.report.data import load_study
from study.state import StudyState, study_dir
from study.tracking.contract import read_best_tags

EPOCHS = 6


def config(tmp_path, **overrides):
    return load("smoke", overrides={"name": "lifecycle", "variants": ["CNN", "STN-C1"], "trials_per_cell": 3,
                                    "n_startup_trials": 3, "epochs": EPOCHS, "grace_period": 2, "final_seeds": [0, 1],
                                    "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                    "storage_path": str(tmp_path / "tune"), **overrides})


def test_start_then_execute_runs_search_final_and_report_and_records_each_cells_choice(ray_local, tmp_path,
                                                                                     monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the report's folder
    meter = DriverMeter()
    driver = StudyDriver(config(tmp_path), quiet=True, report=True, trainable=load_trial, callbacks=[meter])
    state = driver.start()
    assert driver.execute() == state.study_id
    saved = StudyState.load(study_dir(str(tmp_path / "tune"), state.study_id))
    assert saved.status == "finished" and saved.search_complete == [True]
    client = MlflowClient(driver.tracking_uri)
    runs = load_study(client, state.study_id).runs
    assert not (runs["status"] == "RUNNING").any() and (runs["stage"] == "search").sum() == 6
    chosen = read_best_tags(client.get_run(state.parent_run_id).data.tags)
    assert set(chosen) == {"rotated-mnist/CNN", "rotated-mnist/STN-C1"}
    for cell, choice in chosen.items():
        search = runs[(runs["cell"] == cell) & (runs["stage"] == "search") & (runs["outcome"] == "completed")]
        best = search.loc[search["val_error"].idxmin()]  # the generator's errors do not tie
        assert choice["trial_number"] == int(best["param.trial_number"]) and choice["hparams_hash"] == best["hparams_hash"]
        finals = runs[(runs["cell"] == cell) & (runs["stage"] == "final")]
        assert sorted(finals["seed"]) == ["0", "1"] and set(finals["hparams_hash"]) == {choice["hparams_hash"]}
    # every completed trial trained all its epochs in its own folder (a reused worker never resumes another's state)
    for rid in runs.loc[runs["outcome"] == "completed", "run_id"]:
        assert [m.step for m in client.get_metric_history(rid, "val_error")] == list(range(1, EPOCHS + 1))
        assert not client.get_metric_history(rid, "restored_from_epoch") or max(
            m.value for m in client.get_metric_history(rid, "restored_from_epoch")) == 0
    # every result reached the driver's callbacks: the meter saw as many as MLflow holds epochs and ends
    epochs = sum(len(client.get_metric_history(rid, "val_error")) for rid in runs["run_id"])
    assert meter.summary()["results"] >= epochs
    assert (tmp_path / "reports" / state.study_id / "report.md").exists()  # quiet: no progress, still a report
    assert "search" not in capsys.readouterr().out  # ... and no progress lines


def test_a_study_without_its_report_builds_none_and_prints_nothing(ray_local, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    driver = StudyDriver(config(tmp_path, trials_per_cell=1, n_startup_trials=1, final_seeds=[]), quiet=True,
                         report=False, trainable=load_trial)
    driver.start()
    driver.execute()
    assert not (tmp_path / "reports").exists() and capsys.readouterr().out == ""
    tags = MlflowClient(driver.tracking_uri).get_run(driver.state.parent_run_id).data.tags
    assert tags["study_status"] == "finished"
    assert {json.loads(v)["trial_number"] for k, v in tags.items() if k.startswith("best.")} == {0}

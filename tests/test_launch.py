"""A tiny end-to-end study on real Ray Tune, Optuna and MLflow (sqlite store) through ``run(config)``."""

import os
from pathlib import Path

import mlflow
import mlflow.pytorch
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from study.api import run
from study.config import load
from study.report.data import load_study
from study.state import StudyState

EPOCHS, TRIALS, SEEDS = 3, 4, [0, 1]


@pytest.fixture(scope="module")
def study(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = load("smoke", overrides={
        "name": "e2e", "variants": ["CNN", "STN-C0"], "trials_per_cell": TRIALS, "epochs": EPOCHS,
        "train_size": 256, "test_passes": 1, "grace_period": 1, "reduction_factor": 2, "final_seeds": SEEDS,
        "max_concurrent_trials": 2, "tracking_uri": uri, "storage_path": str(root / "tune"),
        # every STN-C0 configuration is poor: per-cell pruning must still train its best to the end
        "overrides": {"STN-C0": {"optimizer": ["sgd"], "lr": {"low": 1e-7, "high": 2e-7, "log": True},
                                 "momentum": {"low": 0.0, "high": 0.0}}},
    })
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    study_id = run(cfg, quiet=True, report=False)
    # logging final models must not leave this store as the process-wide default for later studies
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before
    return study_id, uri, load_study(MlflowClient(uri), study_id).runs


def test_every_cell_has_its_trials_one_run_each(study):
    _, _, runs = study
    search = runs[runs["stage"] == "search"]
    assert search.groupby("cell").size().to_dict() == {"rotated-mnist/CNN": TRIALS, "rotated-mnist/STN-C0": TRIALS}
    assert runs["trial_id"].is_unique  # exactly one child run per Tune trial
    assert set(runs["mlflow.parentRunId"]) and runs["mlflow.parentRunId"].nunique() == 1


def test_no_run_left_running_and_statuses_are_truthful(study):
    _, _, runs = study
    assert not (runs["status"] == "RUNNING").any()
    assert set(runs["outcome"]) <= {"completed", "pruned"}
    assert (runs.loc[runs["outcome"] == "pruned", "status"] == "FINISHED").all()
    assert (runs["outcome"] == "pruned").sum() >= 1


def test_per_epoch_curves_and_end_metrics(study):
    _, uri, runs = study
    client = MlflowClient(uri)
    for _, row in runs[runs["outcome"] == "completed"].iterrows():
        history = client.get_metric_history(row["run_id"], "val_error")
        assert [m.step for m in history] == list(range(1, EPOCHS + 1))
        assert 0 <= row["test_error"] <= 1 and row["eq1_residual_translation_d1"] < 1e-5
    pruned = runs[runs["outcome"] == "pruned"]
    assert pruned["test_error"].isna().all()  # a pruned trial never reaches the test set


def test_poor_cell_still_trains_its_best_to_the_end(study):
    _, _, runs = study
    poor = runs[(runs["cell"] == "rotated-mnist/STN-C0") & (runs["stage"] == "search")]
    good = runs[(runs["cell"] == "rotated-mnist/CNN") & (runs["stage"] == "search")]
    assert (poor["outcome"] == "completed").sum() >= 1
    assert poor["val_error"].min() > good["val_error"].min()  # the cell really is worse


def test_final_stage_retrains_each_cells_val_best_config_with_every_seed(study):
    _, _, runs = study
    hparams = ["param.optimizer", "param.lr", "param.loc_lr_mult", "param.momentum", "param.batch_size"]
    for _cell, group in runs.groupby("cell"):
        search = group[(group["stage"] == "search") & (group["outcome"] == "completed")]
        ranked = search.assign(number=search["param.trial_number"].astype(int))
        best = ranked.sort_values(["val_error", "number"]).iloc[0]  # ties go to the earlier trial
        final = group[group["stage"] == "final"]
        assert sorted(final["seed"].astype(int)) == SEEDS
        for _, row in final.iterrows():
            assert [row[h] for h in hparams] == [best[h] for h in hparams]
            assert row["outcome"] == "completed" and row["param.epochs"] == str(EPOCHS)
        # the driver recorded its choice on the parent run, where the report reads it
        assert int(group["chosen_trial"].iloc[0]) == int(best["param.trial_number"])
        assert set(final["hparams_hash"]) == {group["chosen_hash"].iloc[0]} == {best["hparams_hash"]}


def test_each_cells_final_runs_start_in_the_search_run_once_its_search_is_over(study):
    study_id, uri, runs = study
    state = StudyState.load(Path(uri.removeprefix("sqlite:///")).parent / "tune" / study_id)
    assert state.search_runs == ["search-1"] and state.final_runs == []  # no second Tune run was needed
    client = MlflowClient(uri)
    for _, group in runs.groupby("cell"):
        info = {row["run_id"]: client.get_run(row["run_id"]).info for _, row in group.iterrows()}
        search_end = max(info[r].end_time for r in group.loc[group["stage"] == "search", "run_id"])
        final_starts = [info[r].start_time for r in group.loc[group["stage"] == "final", "run_id"]]
        assert len(final_starts) == len(SEEDS) and min(final_starts) >= search_end


def test_artifacts_figures_and_final_models(study, monkeypatch):
    study_id, uri, runs = study
    client = MlflowClient(uri)
    stn_final = runs[(runs["stage"] == "final") & (runs["cell"] == "rotated-mnist/STN-C0")].iloc[0]
    names = {a.path for a in client.list_artifacts(stn_final["run_id"], "figures")}
    assert {"figures/angle_plot.png", "figures/aligned_examples.png", "figures/figures.npz"} <= names
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # mlflow's fluent API; put back after the test
    experiment = [client.get_experiment_by_name("e2e").experiment_id]
    models = mlflow.search_logged_models(experiment, f"source_run_id = '{stn_final['run_id']}'", output_format="list")
    assert len(models) == 1
    loaded = mlflow.pytorch.load_model(models[0].model_uri)  # the safe format: no pickled code is loaded
    info = mlflow.models.get_model_info(models[0].model_uri)
    assert info.metadata["variant"] == "STN-C0" and info.metadata["dataset"] == "rotated-mnist"
    assert tuple(loaded(torch.zeros(3, 1, 28, 28)).shape) == (3, 10)
    search_run = runs[runs["stage"] == "search"].iloc[0]
    assert mlflow.search_logged_models(experiment, f"source_run_id = '{search_run['run_id']}'",
                                       output_format="list") == []


def test_parent_run_holds_config_and_provenance(study):
    study_id, uri, _ = study
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("e2e")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = client.search_runs([experiment.experiment_id], f"tags.study_id = '{study_id}' and tags.stage = 'study'")[0]
    assert parent.info.status == "FINISHED"
    for tag in ("git_commit", "config_hash", "data_source", "data_digest", "device", "version.torch", "version.ray"):
        assert parent.data.tags[tag]
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "config")] == ["config/study.yaml"]
    assert parent.data.metrics["search_trials_pruned"] >= 1


def test_a_diverging_cell_fails_its_runs_with_the_reason_and_the_study_goes_on(ray_local, tmp_path):
    from study.report.build import build_report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load("smoke", overrides={
        "name": "diverging", "variants": ["CNN", "STN-C0"], "trials_per_cell": 2, "epochs": 2, "train_size": 256,
        "test_passes": 1, "final_seeds": [0], "tracking_uri": uri, "storage_path": str(tmp_path / "tune"),
        "overrides": {"CNN": {"optimizer": ["sgd"], "lr": {"low": 1e30, "high": 2e30, "log": True}}},
        "overlap_final": False,  # the final stage as its own Tune run after the search
    })
    study_id = run(cfg, quiet=True, report=False)
    state = StudyState.load(tmp_path / "tune" / study_id)
    assert state.search_runs == ["search-1"] and state.final_runs == ["final-1"]
    runs = load_study(MlflowClient(uri), study_id).runs
    cnn, stn = runs[runs["cell"] == "rotated-mnist/CNN"], runs[runs["cell"] == "rotated-mnist/STN-C0"]
    assert len(cnn) == 2 and (cnn["outcome"] == "diverged").all() and (cnn["status"] == "FAILED").all()
    assert cnn["failure_reason"].str.contains("diverged at epoch .*: loss is nan .*lower the learning rate").all()
    assert set(stn["stage"]) == {"search", "final"} and (stn["status"] == "FINISHED").all()  # the study went on
    accuracy = (build_report(uri, study_id, str(tmp_path / "report"), quiet=True, log_to_parent=False)
                / "accuracy.md").read_text()
    assert "rotated-mnist/CNN: 2 diverged" in accuracy


@pytest.mark.dashboard
def test_each_cells_search_opens_in_optuna_dashboard(study):
    """The real optuna-dashboard on the study's journal shows every cell's trials, pruned ones included."""
    import json
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import free_port

    study_id, uri, runs = study
    journal = Path(uri.removeprefix("sqlite:///")).parent / "tune" / study_id / "optuna.journal"
    port = free_port()
    # the installed command's entry point, run by this interpreter: its script need not sit beside it (a venv
    # that sees the system's packages has it in the system's bin)
    command = ("import sys; from importlib.metadata import entry_points; "
               "sys.exit(entry_points(group='console_scripts', name='optuna-dashboard')[0].load()())")
    dashboard = subprocess.Popen([sys.executable, "-c", command, str(journal), "--host",
                                  "127.0.0.1", "--port", str(port), "--quiet"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def get(path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return json.loads(response.read())

    try:
        deadline = time.time() + 120
        while True:
            try:
                summaries = get("/api/studies")["study_summaries"]
                break
            except OSError:
                assert dashboard.poll() is None and time.time() < deadline, dashboard.stderr.read()
                time.sleep(0.5)
        names = {s["study_name"]: s["study_id"] for s in summaries}
        assert sorted(names) == [f"{study_id}/rotated-mnist/CNN", f"{study_id}/rotated-mnist/STN-C0"]
        pruned = 0
        for name, optuna_id in names.items():
            trials = get(f"/api/studies/{optuna_id}?after=0")["trials"]
            search = runs[(runs["stage"] == "search") & (runs["cell"] == name.split("/", 1)[1])]
            assert len(trials) == len(search) == TRIALS
            for trial in trials:  # each trial as MLflow has it: outcome, value, every epoch reported
                run = search[pd.to_numeric(search["param.trial_number"]) == trial["number"]].iloc[0]
                steps = [v["step"] for v in trial["intermediate_values"]]
                if trial["state"] == "Pruned":
                    pruned += 1
                    assert run["outcome"] == "pruned" and 1 <= len(steps) < EPOCHS
                else:
                    assert trial["state"] == "Complete" and run["outcome"] == "completed"
                    assert steps == list(range(1, EPOCHS + 1))
                    assert trial["values"][0] == pytest.approx(float(run["val_error"]))
                assert {p["name"] for p in trial["params"]} >= {"lr", "optimizer", "batch_size"}
        assert pruned >= 1
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)


def test_a_study_without_a_search_trains_its_fixed_recipe_in_final_runs_only(ray_local, tmp_path):
    """trials_per_cell 0 (the quick preset): no search run, one final run per cell and seed with the recipe."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load("quick", overrides={"name": "recipe", "variants": ["CNN", "STN-SL1"], "epochs": 1, "warmup_epochs": 1,
                                   "train_size": 128,
                                   "test_passes": 1, "final_seeds": [0, 1], "tracking_uri": uri,
                                   "storage_path": str(tmp_path / "tune")})
    study_id = run(cfg, quiet=True, report=False)
    runs = load_study(MlflowClient(uri), study_id).runs
    assert set(runs["stage"]) == {"final"} and len(runs) == 4
    assert set(runs["outcome"]) == {"completed"} and (runs["status"] == "FINISHED").all()
    assert sorted(zip(runs["cell"], runs["seed"].astype(str), strict=True)) == sorted(
        (cell, seed) for cell in ("rotated-mnist/CNN", "rotated-mnist/STN-SL1/rotation") for seed in ("0", "1"))
    assert set(runs["param.loc_lr_mult"].astype(float)) == {1.0} and set(runs["param.optimizer"]) == {"adam"}

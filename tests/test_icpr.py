"""A tiny ICPR-shaped study end to end: a PlanktonSet PNG tree, real Ray Tune, Optuna and MLflow, the depth table."""

from mlflow.tracking import MlflowClient
from test_plankton import write_tree

from study.api import run
from study.config import load
from study.report.build import build_report
from study.report.data import load_study


def test_tiny_icpr_study_reports_the_depth_table(ray_local, tmp_path):
    data = tmp_path / "data"
    write_tree(data / "plankton", per_class=4)  # 3 classes: 2 train / 1 val / 1 test each
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load("icpr", overrides={
        "name": "icpr-tiny", "datasets": ["plankton"], "variants": ["STN-C2", "STN-SL2", "STN-SL4"], "extra_cells": [],
        "trials_per_cell": 1, "n_startup_trials": 1, "epochs": 1, "grace_period": 1, "final_seeds": [0],
        "search": {"optimizer": ["adam"], "batch_size": [6]}, "resources": {"cpus": 1, "gpus": 0},
        "max_concurrent_trials": 2, "device": "cpu", "data_root": str(data), "download": True,
        "tracking_uri": uri, "storage_path": str(tmp_path / "tune"),
    })
    study_id = run(cfg, quiet=True, report=False)
    client = MlflowClient(uri)
    study = load_study(client, study_id)
    runs = study.runs
    assert sorted(runs["cell"].unique()) == ["plankton/STN-C2", "plankton/STN-SL2", "plankton/STN-SL4"]
    assert (runs["outcome"] == "completed").all() and sorted(runs["stage"]) == ["final"] * 3 + ["search"] * 3
    finals = runs[runs["stage"] == "final"]
    assert finals["rotation_consistency_deg"].between(0, 90).all()  # every STN on PlanktonSet, in MLflow
    parent = client.get_run(study.parent_run_id)
    assert parent.data.tags["data_source"].startswith(f"PlanktonSet tree at {data / 'plankton'} (3 classes")
    assert (data / ".stn-study-data.lock").exists()  # prepared by the driver, under the lock
    out = build_report(uri, study_id, str(tmp_path / "report"), quiet=True, log_to_parent=False)
    depth = (out / "depth_plankton.csv").read_text().splitlines()
    assert depth[0] == "sharing,X=2,X=4"
    assert [line.split(",")[0] for line in depth[1:]] == ["C", "SL"]
    assert depth[1].endswith(",—") and "(n=1)" in depth[1] and depth[2].count("(n=1)") == 2
    assert "plankton: test error (%) by ST depth" in (out / "report.md").read_text()
    assert (out / "error_vs_depth_plankton.png").stat().st_size > 0
    assert (out / "accuracy.csv").read_text().splitlines()[0] == "variant,plankton"

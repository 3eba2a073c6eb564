"""``study.bench.versus``: the hand-written Tune script draws from the study's own search space and leaves one
MLflow run per trial (real Ray, Tune, Optuna and MLflow; a tiny workload)."""

from ray import tune

from study.bench.versus import handwritten, tune_space
from study.config import Cell, load


def test_the_tune_space_is_the_cells_search_space():
    cfg = load("smoke", overrides={"search": {"optimizer": ["adam", "sgd"], "lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                              "momentum": {"low": 0.0, "high": 0.9}, "batch_size": [64, 128]}})
    space = tune_space(cfg, Cell("rotated-mnist", "CNN"))
    assert isinstance(space["lr"].sampler, tune.search.sample.LogUniform) and (space["lr"].lower, space["lr"].upper) == (1e-4, 1e-2)
    assert (space["momentum"].lower, space["momentum"].upper) == (0.0, 0.9)
    assert space["optimizer"].categories == ["adam", "sgd"] and space["batch_size"].categories == [64, 128]
    assert space["weight_decay"] == cfg.search.weight_decay.low  # a range without width is a constant


def test_the_handwritten_script_runs_the_workload_and_records_one_run_per_trial(ray_local, tmp_path):
    cfg = load("smoke", overrides={"variants": ["CNN"], "trials_per_cell": 2, "epochs": 1, "train_size": 128,
                                   "test_passes": 1, "final_seeds": [0], "max_concurrent_trials": 2})
    from mlflow.tracking._tracking_service import utils as tracking_utils

    before = tracking_utils._tracking_uri
    out = handwritten(cfg, tmp_path)
    assert tracking_utils._tracking_uri == before  # MLflow's process-wide URI is left as it was
    assert out["mlflow_runs"] == 3 and out["wall_s"] > 0  # 2 search trials + 1 final run, no parent

"""Side by side: the study_overhead workload as the Ray Tune script a user would write without us.

Per cell, one ``Tuner`` with ``OptunaSearch`` over the same search space, ``ASHAScheduler`` with the same
grace period and reduction factor (its first rung at the last epoch where the study prunes nothing, so
that both run the same trials to their end), and Tune's ``MLflowLoggerCallback``; then one more ``Tuner`` for
the cells' best configurations × the final seeds. The same trainable (``study.trial.train_cell``),
trials, epochs, slots and Ray instance as ours; Tune's default result files stay on, as a user would
leave them. What it leaves is one MLflow run per trial with its config and per-epoch metrics: no
parent run, no figures or models, no per-cell study that survives the driver, no resume.
"""

from __future__ import annotations

import os
import time

from study.config import StudyConfig


def tune_space(cfg: StudyConfig, cell) -> dict:
    """The cell's search space in Tune's own terms (a range without width is a constant)."""
    from ray import tune

    space = cfg.space_for(cell.dataset, cell.variant)

    def rng(r):
        if r.low == r.high:
            return r.low
        return tune.loguniform(r.low, r.high) if r.log else tune.uniform(r.low, r.high)

    return {"optimizer": tune.choice(space.optimizer), "lr": rng(space.lr), "loc_lr_mult": rng(space.loc_lr_mult),
            "momentum": rng(space.momentum), "weight_decay": rng(space.weight_decay),
            "batch_size": tune.choice(space.batch_size)}


def handwritten(cfg: StudyConfig, root) -> dict:
    """Run the workload the way the module docstring says; wall time and what MLflow holds at the end."""
    from mlflow.tracking import MlflowClient
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from study.signals import fit  # Tune's SIGINT handler must not outlive each run (the bench goes on after it)
    from study.trial import train_cell
    from study.trial_schema import cell_fields, constants

    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved = os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)  # a user's script keeps Tune's defaults
    from mlflow.tracking._tracking_service import utils as tracking_utils

    # Tune's MLflow callback sets MLflow's process-wide tracking URI (and $MLFLOW_TRACKING_URI) to this store:
    # both are put back, as study.tracking.trial_runs.log_final_model does, so later MLflow calls keep theirs
    uri_before, env_before = tracking_utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    trainable = tune.with_resources(train_cell, {"cpu": cfg.resources.cpus, "gpu": cfg.resources.gpus})
    # the same trials as ours: where the study prunes nothing, ASHA's first rung is the last epoch (it stops none)
    grace = cfg.epochs if cfg.pruner == "none" else cfg.grace_period
    started = time.perf_counter()
    try:
        finals = []
        for cell in cfg.cells():
            base = {**constants(cfg, "search"), **cell_fields(cell), "seed": cfg.seed}
            tuner = tune.Tuner(
                trainable, param_space={**base, **tune_space(cfg, cell)},
                tune_config=tune.TuneConfig(
                    search_alg=OptunaSearch(metric="val_error", mode="min", seed=cfg.seed),
                    scheduler=ASHAScheduler(metric="val_error", mode="min", time_attr="epoch", max_t=cfg.epochs,
                                            grace_period=grace, reduction_factor=cfg.reduction_factor),
                    num_samples=cfg.trials_per_cell, max_concurrent_trials=cfg.max_concurrent_trials),
                run_config=tune.RunConfig(name=f"search-{cell.variant}", storage_path=str(root / "tune"), verbose=0,
                                          callbacks=[MLflowLoggerCallback(uri, experiment_name="handwritten")]))
            best = fit(tuner).get_best_result(metric="val_error", mode="min", scope="last").config
            finals += [{**best, **constants(cfg, "final"), "seed": seed} for seed in cfg.final_seeds]
        fit(tune.Tuner(trainable, param_space={"spec": tune.grid_search(finals)},
                   tune_config=tune.TuneConfig(max_concurrent_trials=cfg.max_concurrent_trials),
                   run_config=tune.RunConfig(name="final", storage_path=str(root / "tune"), verbose=0,
                                             callbacks=[MLflowLoggerCallback(uri, experiment_name="handwritten")])))
    finally:
        if saved is not None:
            os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = saved
        tracking_utils._tracking_uri = uri_before
        if env_before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env_before
    wall = time.perf_counter() - started
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("handwritten").experiment_id], max_results=10000)
    work = sum(max([m.value for m in client.get_metric_history(r.info.run_id, "trial_seconds")] or [0.0]) for r in runs)
    return {"wall_s": wall, "mlflow_runs": len(runs), "trials": len(runs), "trial_work_s": work,
            "study_overhead": 1 - work / (wall * cfg.max_concurrent_trials),
            "artifacts_per_run": sum(len(client.list_artifacts(r.info.run_id)) for r in runs) / max(1, len(runs))}

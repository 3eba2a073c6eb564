"""Study overhead: the share of a real study's slot time that its trials did not work."""

from __future__ import annotations

import tempfile
import time


def study_overhead(epochs: int, train_size: int, trials_per_cell: int, final_seeds: list[int]) -> dict:
    """A real study (local Ray, sqlite MLflow; search and final runs): the share of slot time the trials did not work.

    A trial's work is ``trial_seconds`` (from entering the trainable to its last report: data, model,
    epochs, per-epoch checkpoints and the end evaluation); everything else — Ray start, scheduling,
    searcher, tracking, idle slots — is study overhead. ``epoch_share`` is the stricter view: the
    share of slot time spent inside training epochs.

    Part of the idle slot time belongs to the workload, not to the tool: a cell's final runs cannot
    start before its last search trial ends. ``schedule_floor_s`` is the shortest time any scheduler
    could run these trials on these slots (``schedule_floor``), and ``overhead_beyond_floor`` the
    share of wall time beyond it — start-up, trial wrap-up and scheduling choices.
    """
    from mlflow.tracking import MlflowClient

    from study.config import load
    from study.launch import run
    from study.report.data import load_study

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        cfg = load("smoke", overrides={"name": "bench", "variants": ["CNN", "STN-C0"], "trials_per_cell": trials_per_cell,
                                       "epochs": epochs, "train_size": train_size, "final_seeds": final_seeds,
                                       "pruner": "none", "tracking_uri": uri, "storage_path": f"{tmp}/tune"})
        started, started_epoch = time.perf_counter(), time.time()
        study_id = run(cfg, quiet=True)
        wall = time.perf_counter() - started
        client = MlflowClient(uri)
        runs = load_study(client, study_id).runs

        def total(key: str, reduce) -> float:
            return sum(reduce([m.value for m in client.get_metric_history(rid, key)] or [0.0]) for rid in runs["run_id"])

        work, epochs_s = total("trial_seconds", max), total("epoch_seconds", sum)
        seconds = [max([m.value for m in client.get_metric_history(rid, "trial_seconds")] or [0.0])
                   for rid in runs["run_id"]]
        floor = schedule_floor(list(zip(runs["cell"], runs["stage"], seconds)), cfg.max_concurrent_trials)
        infos = [client.get_run(rid).info for rid in runs["run_id"]]
        first_start = min(i.start_time for i in infos) / 1000 - started_epoch
        last_end = max(i.end_time for i in infos) / 1000 - started_epoch
        in_tune = sum(i.end_time - i.start_time for i in infos) / 1000  # Tune's trial start to trial end
    slots = cfg.max_concurrent_trials
    return {"wall_s": wall, "trial_work_s": work, "epoch_s": epochs_s, "slots": slots, "trials": len(runs),
            "mean_trial_s": work / max(1, len(runs)), "study_overhead": 1 - work / (wall * slots),
            "epoch_share": epochs_s / (wall * slots), "first_trial_start_s": first_start,
            "after_last_trial_s": wall - last_end,
            # where the overhead goes, as shares of slot time: before the first trial (imports, Ray,
            # MLflow schema, first worker), around each trial (actor start/reuse, reporting), idle slots
            "share_startup": first_start / wall,
            "share_trial_wrap": (in_tune - work) / (wall * slots),
            "share_idle_slots": (wall * slots - in_tune - first_start * slots) / (wall * slots),
            "schedule_floor_s": floor, "overhead_beyond_floor": 1 - floor / wall}


def schedule_floor(trials: list[tuple[str, str, float]], slots: int) -> float:
    """A lower bound on the time any scheduler needs for (cell, stage, seconds) trials on ``slots`` slots.

    All the work must fit on the slots (Σ seconds / slots), and each cell's final runs start only after
    all of its search trials: at least max(its longest search trial, its search work / slots) plus its
    longest final run.
    """
    bound = sum(s for _, _, s in trials) / slots
    for cell in {c for c, _, _ in trials}:
        search = [s for c, stage, s in trials if c == cell and stage == "search"]
        final = [s for c, stage, s in trials if c == cell and stage == "final"]
        chain = max(max(search, default=0.0), sum(search) / slots) + max(final, default=0.0)
        bound = max(bound, chain)
    return bound

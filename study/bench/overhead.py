"""Study overhead: the share of a real study's slot time that its trials did not work."""

from __future__ import annotations

import math
import tempfile
import time


def study_overhead(epochs: int, train_size: int, trials_per_cell: int, final_seeds: list[int],
                   versus: bool = False) -> dict:
    """A real study (local Ray, sqlite MLflow; search and final runs): the share of slot time the trials did not work.

    A trial's work is ``trial_seconds`` (from entering the trainable to its last report: data, model,
    epochs, per-epoch checkpoints and the end evaluation); everything else — Ray start, scheduling,
    searcher, tracking, idle slots — is study overhead. ``epoch_share`` is the stricter view: the
    share of slot time spent inside training epochs.

    Part of the idle slot time belongs to the workload, not to the tool: a cell's final runs cannot
    start before its last search trial ends, and trials do not split. ``schedule_floor_s`` is the
    shortest time in which a scheduler that knew every trial's time could have run them on these
    slots (``schedule_floor``), ``share_floor_idle`` the slot time that schedule still leaves idle, and
    ``overhead_beyond_floor`` the share of wall time beyond it: start-up, trial wrap-up and our
    scheduler's choices.

    ``versus``: the same workload also runs as the script a user would write with Tune alone
    (``study.bench.versus``), right after ours on the same Ray instance; ``versus_ratio`` is our wall
    time over theirs.
    """
    from mlflow.tracking import MlflowClient

    from study.api import run
    from study.config import load
    from study.report.data import load_study

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        cfg = load("smoke", overrides={"name": "bench", "variants": ["CNN", "STN-C0"], "trials_per_cell": trials_per_cell,
                                       "epochs": epochs, "train_size": train_size, "final_seeds": final_seeds,
                                       "pruner": "none", "tracking_uri": uri, "storage_path": f"{tmp}/tune"})
        started, started_epoch = time.perf_counter(), time.time()
        study_id = run(cfg, quiet=True, report=False)
        wall = time.perf_counter() - started
        client = MlflowClient(uri)
        runs = load_study(client, study_id).runs

        def total(key: str, reduce) -> float:
            return sum(reduce([m.value for m in client.get_metric_history(rid, key)] or [0.0]) for rid in runs["run_id"])

        work, epochs_s = total("trial_seconds", max), total("epoch_seconds", sum)
        seconds = [max([m.value for m in client.get_metric_history(rid, "trial_seconds")] or [0.0])
                   for rid in runs["run_id"]]
        floor = schedule_floor(list(zip(runs["cell"], runs["stage"], seconds, strict=True)), cfg.max_concurrent_trials)
        infos = [client.get_run(rid).info for rid in runs["run_id"]]
        # each trial's MLflow run start and end, seconds into the study: the real schedule, beside the floor's
        timeline = sorted(([c, stage, i.start_time / 1000 - started_epoch, i.end_time / 1000 - started_epoch]
                           for c, stage, i in zip(runs["cell"], runs["stage"], infos, strict=True)), key=lambda row: row[2])
        first_start, last_end = timeline[0][2], max(row[3] for row in timeline)
        in_tune = sum(end - start for _, _, start, end in timeline)  # Tune's trial start to trial end
        if versus:
            from pathlib import Path

            from study.bench.versus import handwritten

            theirs = handwritten(cfg, Path(tmp) / "handwritten")
            ours = {"mlflow_runs": len(runs) + 1, "trials": len(runs), "artifacts_per_final_run": _artifacts(client, runs)}
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
            "schedule_floor_s": floor, "overhead_beyond_floor": 1 - floor / wall,
            # the workload's own idle: slot time that even the floor's schedule leaves without a trial
            "share_floor_idle": 1 - work / (floor * slots),
            "trial_seconds": [[c, stage, t] for c, stage, t in zip(runs["cell"], runs["stage"], seconds, strict=True)],
            "trial_timeline": timeline,
            **({"handwritten": theirs, "versus_ratio": wall / theirs["wall_s"],
                "ours_records": ours} if versus else {})}


def _artifacts(client, runs) -> float:
    finals = [rid for rid, stage in zip(runs["run_id"], runs["stage"], strict=True) if stage == "final"]
    return sum(len(client.list_artifacts(rid)) + len(client.list_artifacts(rid, "figures")) for rid in finals) / max(1, len(finals))


def schedule_floor(trials: list[tuple[str, str, float]], slots: int, most_orders: int = 20_000) -> float:
    """The shortest time in which these (cell, stage, seconds) trials could have run on ``slots`` slots.

    A clairvoyant scheduler that knew every trial's time: each order in which the cells' trials can
    start (a cell's search trials before its final runs, which wait for the last of them) is placed
    greedily on the earliest free slot, and the shortest total is kept. With more orders than
    ``most_orders`` it falls back to a lower bound: the work per slot, or a cell's search then final.
    """
    queues = {}
    for cell, stage, seconds in sorted(trials, key=lambda t: t[1] != "search"):  # search first, stable
        queues.setdefault(cell, []).append((stage, seconds))
    if _orders(queues) > most_orders:
        return _lower_bound(queues, slots)
    best = float("inf")
    for order in _interleavings({c: len(q) for c, q in queues.items()}):
        free, taken, search_end = [0.0] * slots, dict.fromkeys(queues, 0), dict.fromkeys(queues, 0.0)
        for cell in order:
            stage, seconds = queues[cell][taken[cell]]
            taken[cell] += 1
            slot = min(range(slots), key=free.__getitem__)
            start = max(free[slot], search_end[cell] if stage == "final" else 0.0)
            free[slot] = start + seconds
            if stage == "search":
                search_end[cell] = max(search_end[cell], free[slot])
        best = min(best, max(free))
    return best


def _orders(queues: dict) -> int:
    count, placed = 1, 0
    for queue in queues.values():
        placed += len(queue)
        count *= math.comb(placed, len(queue))
    return count


def _interleavings(left: dict):
    if not any(left.values()):
        yield []
        return
    for cell, n in left.items():
        if n:
            for rest in _interleavings({**left, cell: n - 1}):
                yield [cell, *rest]


def _lower_bound(queues: dict, slots: int) -> float:
    bound = sum(s for q in queues.values() for _, s in q) / slots
    for queue in queues.values():
        search = [s for stage, s in queue if stage == "search"]
        final = [s for stage, s in queue if stage == "final"]
        bound = max(bound, max(max(search, default=0.0), sum(search) / slots) + max(final, default=0.0))
    return bound

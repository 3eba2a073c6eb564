"""The driver under load: results per second and driver CPU per result as a study grows, per storage.

A load generator stands in for training: ``load_trial`` reports K epochs of plausible metrics (an
error curve that falls towards a floor set by the hyper-parameters, with noise), keeps a small resume
state per epoch and ends with a checkpoint, through the real trial's own functions, but trains nothing. Everything else is the product:
the real Tune loop, our per-cell searcher and pruner, the Optuna record on the chosen storage, the
MLflow child runs through the spool, the final stage. The generator lives here, out of the trial's
code path (``StudyDriver`` takes it as its ``trainable``).

``DriverMeter`` (a Tune callback on the driver) samples the driver process's CPU time at every
result: the steady-state cost per result is the CPU between the first and the last result over the
results between them, so Ray's start and the wrap-up are reported apart.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from pathlib import Path

import torch
from ray import tune

from study.trial import STATE_FILE, load_resume, save_resume
from study.trial_schema import trial_key


def load_trial(config: dict) -> None:
    """A Tune trainable with the real trial's reports and checkpoints, and no training."""
    started = time.perf_counter()
    config = {**config, **config.get("spec", {})}
    rng = random.Random(f"{config['cell']}/{config.get('trial_number')}/{config.get('seed')}")  # str: same in every process
    # the floor depends on the distance of lr from a sweet spot, so the searcher and pruner see a signal
    floor = 0.02 + 0.1 * abs(math.log10(float(config.get("lr", 1e-3))) + 3.0)
    epochs = int(config["epochs"])
    key = trial_key(config)
    resume = load_resume(key)
    if resume is not None and resume.get("final"):
        tune.report({"outcome": "completed", **resume["final"]})
        return
    first = 1 + (resume["epoch"] if resume else 0)
    val_error = 1.0
    for epoch in range(first, epochs + 1):
        val_error = floor + (0.9 - floor) * math.exp(-epoch / 3) + rng.gauss(0, 0.005)
        tune.report({"epoch": epoch, "train_loss": 2.3 * val_error, "val_error": val_error, "lr": 1e-3,
                     "epoch_seconds": 0.001, "images_per_s": 1e6, "restored_from_epoch": first - 1,
                     "trial_seconds": time.perf_counter() - started})
        save_resume({"epoch": epoch, "weights": bytes(1024)}, key)  # a small model's state, after the report as the trial's
    final = {"val_error": val_error, "test_error": val_error + 0.002, "trial_seconds": time.perf_counter() - started}
    with tempfile.TemporaryDirectory() as directory:
        torch.save({"final": final, "epoch": epochs}, Path(directory) / STATE_FILE)
        tune.report({"outcome": "completed", **final}, checkpoint=tune.Checkpoint.from_directory(directory))
    save_resume({"final": final, "epoch": epochs}, key)


class DriverMeter(tune.Callback):
    """The driver's CPU time and wall time at each result (on the driver: Tune calls back in its loop)."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.samples.append((time.perf_counter(), time.process_time()))

    def summary(self) -> dict:
        n = len(self.samples)
        if n < 2:
            return {"results": n}
        (w0, c0), (w1, c1) = self.samples[0], self.samples[-1]
        return {"results": n, "results_per_s": (n - 1) / (w1 - w0), "cpu_ms_per_result": 1000 * (c1 - c0) / (n - 1),
                "wall_ms_per_result": 1000 * (w1 - w0) / (n - 1)}


def driver_run(storage: str, trials_per_cell: int, epochs: int, root: Path, optuna_url: str | None = None) -> dict:
    """One study of the load generator: 5 cells × ``trials_per_cell`` × ``epochs`` (less what is pruned)."""
    from study.api import run
    from study.config import load

    meter = DriverMeter()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    overrides = {"name": f"load{trials_per_cell}", "trials_per_cell": trials_per_cell, "n_startup_trials": 5,
                 "epochs": epochs, "grace_period": 3, "reduction_factor": 3, "final_seeds": [0],
                 "tracking_uri": uri, "storage_path": storage, "optuna_storage": optuna_url}
    cfg = load("smoke", overrides={k: v for k, v in overrides.items() if v is not None})
    wall, cpu = time.perf_counter(), time.process_time()
    run(cfg, quiet=True, report=False, trainable=load_trial, callbacks=[meter])
    return {**meter.summary(), "study_wall_s": time.perf_counter() - wall,
            "study_cpu_s": time.process_time() - cpu, "trials_per_cell": trials_per_cell, "epochs": epochs}


def driver_load(sizes=(2, 20, 200), epochs: int = 10, storages=("local", "s3", "postgres")) -> dict:
    """Each storage at each size: trials per cell, ×5 cells × ``epochs`` results less what the pruner stops
    (about 130, 600 and 6,000 at the default sizes: 10× the work at each step).

    ``flatness`` is the per-result CPU at the largest size over that at the middle one (target ≤ 1.5).
    """
    from study.bench.services import LocalPostgres, S3Server, postgres_available

    out = {}
    s3 = S3Server().start() if "s3" in storages else None
    pg = LocalPostgres().start() if "postgres" in storages and postgres_available() else None
    saved_env = dict(os.environ)
    try:
        if s3 is not None:
            from study.paths import s3_client

            os.environ.update(s3.env)  # before Ray starts: its workers inherit it
            s3_client.cache_clear()
        if pg is not None:
            os.environ["PGPASSWORD"] = pg.password
        for storage in storages:
            rows = []
            for size in sizes:
                with tempfile.TemporaryDirectory() as tmp:
                    root = Path(tmp)
                    if storage == "local":
                        row = driver_run(str(root / "tune"), size, epochs, root)
                    elif storage == "s3":
                        row = driver_run(f"s3://{s3.bucket}/load-{size}-{time.time_ns()}", size, epochs, root)
                    elif pg is not None:
                        row = driver_run(str(root / "tune"), size, epochs, root, pg.database(f"load{size}_{time.time_ns()}"))
                    else:
                        row = {"skipped": "PostgreSQL 15 server binaries and root are needed"}
                rows.append(row)
                print(f"driver  {storage:<9} {size:>4} trials/cell  {row}", flush=True)
            costs = [r.get("cpu_ms_per_result") for r in rows]
            out[storage] = {"runs": rows, "flatness": costs[-1] / costs[-2] if all(costs[-2:]) else None}
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        for server in (s3, pg):
            if server is not None:
                server.stop()
    return out

"""The Ray Tune function trainable: wraps the loop, reports every epoch with a checkpoint.

It lives in ``study`` (orchestration), so that ``trainables`` stays pure PyTorch. A checkpoint holds the loop's full state, so a
trial restarted after a crash resumes at its last epoch. The final report carries the end-of-trial
metrics and ``outcome``; its checkpoint carries the figures (and the model for final-stage runs),
which the driver logs to MLflow — the worker never needs to reach the tracking server.
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
from pathlib import Path

import torch
from ray import tune

from study.prepare import source_root
from study.tracking.contract import MODEL_FILE, SPEC_FILE
from study.trial_schema import hparams
from trainables.data import data_source, load_data
from trainables.figures import write_trial_figures
from trainables.loop import TrainConfig, train
from trainables.outcome import Outcome
from trainables.train_config import TRAIN_DEFAULTS

STATE_FILE = "state.pt"  # the loop's state in each checkpoint (the driver never reads it)


@functools.lru_cache(maxsize=4)
def _splits(source: str, data_root: str | None):
    """Loaded once per worker process and source (the MNIST family shares one): actor reuse keeps it across trials.

    Read only, never downloaded: the driver prepared the data before any trial (``study.prepare``).
    """
    return load_data(source, data_root, download=False)


def train_config(config: dict) -> TrainConfig:
    """The trial's training options: the cell and its length are required; another option the config
    lacks takes TrainConfig's default."""
    d = {**TRAIN_DEFAULTS, **config}
    return TrainConfig(
        dataset=config["dataset"], variant=config["variant"], st_transform=d["st_transform"],
        epochs=int(config["epochs"]), train_size=d["train_size"], seed=int(d["seed"]),
        device=d["device"], download=False,  # the driver prepared the data: trials only read
        data_root=source_root(d["data_root"], data_source(config["dataset"])),
        test_passes=int(d["test_passes"]), **hparams(config),
        lr_milestones=tuple(d["lr_milestones"]), warmup_epochs=float(d["warmup_epochs"]),
    )


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _load_resume() -> dict | None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        path = Path(directory) / STATE_FILE
        return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def train_cell(config: dict) -> None:
    """One trial of a cell: ``config`` holds the cell, the stage, the seed and the hyper-parameters."""
    started = time.perf_counter()  # trial_seconds: the trial's own work, for the study-overhead benchmark
    config = {**config, **config.get("spec", {})}
    torch.set_num_threads(int(config.get("threads") or 1))
    cfg = train_config(config)
    resume = _load_resume()
    if resume is not None and resume.get("final"):
        tune.report({"outcome": Outcome.COMPLETED, **resume["final"]})  # finished before an interruption
        return

    restored_from = int(resume["epoch"]) if resume is not None else 0

    def on_epoch(record: dict, state) -> None:
        with tempfile.TemporaryDirectory() as directory:
            torch.save(state(), Path(directory) / STATE_FILE)
            tune.report({**record, "restored_from_epoch": restored_from,
                         "trial_seconds": time.perf_counter() - started}, checkpoint=tune.Checkpoint.from_directory(directory))

    splits = _splits(data_source(cfg.dataset), cfg.data_root)
    result = train(cfg, on_epoch=on_epoch, splits=splits, resume=resume)
    if result.status == Outcome.DIVERGED:
        # val_error = 1.0 (the worst error): Tune requires its metric in every result; the searcher is told FAIL
        tune.report({"outcome": Outcome.DIVERGED, "message": result.message, "val_error": 1.0, **result.metrics})
        return
    final = {**result.metrics, "outcome": Outcome.COMPLETED, "node_id": _node_id()}
    with tempfile.TemporaryDirectory() as directory:
        write_trial_figures(directory, result.figures, result.metrics, f"{config['cell']} ({config['stage']})")
        torch.save({"final": result.metrics, "epoch": cfg.epochs}, Path(directory) / STATE_FILE)
        if config.get("stage") == "final":
            torch.save(result.model.state_dict(), Path(directory) / MODEL_FILE)
            spec = {"dataset": cfg.dataset, "variant": cfg.variant, "st_transform": cfg.st_transform}
            (Path(directory) / SPEC_FILE).write_text(json.dumps(spec))
        final["trial_seconds"] = time.perf_counter() - started
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(directory))

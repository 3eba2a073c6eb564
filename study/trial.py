"""The Ray Tune function trainable: wraps the loop, reports every epoch, keeps its state to resume from.

It lives in ``study`` (orchestration), so that ``trainables`` stays pure PyTorch. After each epoch the
loop's full state is written to the study's storage (``RESUME_DIR/<trial key>.pt``, on the storage's
filesystem: local, shared or S3), so a trial restarted after a crash, on any node, resumes at its last
epoch — also when Tune's own snapshot predates the trial and the searcher suggests it again under its
key (``study.trial_schema.trial_key``). It is not a Tune checkpoint: Tune forces a snapshot of the whole
experiment every few reported checkpoints (``CheckpointConfig.num_to_keep``), which costs in
proportion to the number of trials at every epoch and made the driver's cost per result grow with
the study (docs/performance.md). The final report carries the end-of-trial metrics and ``outcome``;
its checkpoint — one per trial — carries the figures (and the model for final-stage runs), which
the driver logs to MLflow: the worker never needs to reach the tracking server.
"""

from __future__ import annotations

import functools
import io
import json
import tempfile
import time
from pathlib import Path

import torch
from ray import tune

from study.prepare import source_root
from study.tracking.contract import MODEL_FILE, SPEC_FILE, Stage
from study.trial_schema import trial_key
from trainables.data import data_source, load_data
from trainables.figures import write_trial_figures
from trainables.loop import TrainConfig, train
from trainables.outcome import Outcome
from trainables.train_config import OPTIONS, TRAIN_DEFAULTS

STATE_FILE = "state.pt"  # in the final checkpoint: the end metrics, so a finished trial is never trained again
RESUME_DIR = "resume-state"  # in the study's storage: <trial key>.pt, the loop's state after the trial's last epoch
RESUME_FILE = "resume-state.pt"  # in Tune's trial folder, for a trial run outside a study (no trial key)


@functools.lru_cache(maxsize=4)
def _splits(source: str, data_root: str | None):
    """Loaded once per worker process and source (the MNIST family shares one): actor reuse keeps it across trials.

    Read only, never downloaded: the driver prepared the data before any trial (``study.prepare``).
    """
    return load_data(source, data_root, download=False)


def train_config(config: dict) -> TrainConfig:
    """The trial's training options: the cell and its length are required; another option the config
    lacks takes TrainConfig's default."""
    d = {**TRAIN_DEFAULTS, **{k: v for k, v in config.items() if k in OPTIONS}}
    return TrainConfig(**{
        **d, "dataset": config["dataset"], "variant": config["variant"], "epochs": int(config["epochs"]),
        "seed": int(d["seed"]), "lr_milestones": tuple(d["lr_milestones"]),
        "download": False,  # the driver prepared the data: trials only read
        "data_root": source_root(d["data_root"], data_source(config["dataset"]))})


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _resume_file(key: str | None):
    """The trial's resume state: (the storage's pyarrow filesystem, the file's path on it)."""
    from ray.train._internal.session import get_storage  # a DeveloperAPI (tests/test_private_apis.py)

    storage = get_storage()
    if key is None:
        return storage.storage_filesystem, f"{storage.trial_fs_path}/{RESUME_FILE}"
    return storage.storage_filesystem, f"{storage.storage_fs_path}/{RESUME_DIR}/{key}.pt"


def save_resume(state: dict, key: str | None) -> None:
    """Replace the trial's resume state whole: a reader sees the old state or the new, never a torn one."""
    import pyarrow.fs

    fs, path = _resume_file(key)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    if isinstance(fs, pyarrow.fs.LocalFileSystem):  # a rename is atomic; an object store's PUT is by itself
        with fs.open_output_stream(f"{path}.tmp") as out:
            out.write(buffer.getvalue())
        fs.move(f"{path}.tmp", path)
    else:
        with fs.open_output_stream(path) as out:
            out.write(buffer.getvalue())


def load_resume(key: str | None) -> dict | None:
    """What the trial resumes from: a finished trial's final checkpoint, else its last epoch's state, else None."""
    import pyarrow.fs

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            path = Path(directory) / STATE_FILE
            if path.exists():
                return torch.load(path, map_location="cpu", weights_only=False)
    fs, path = _resume_file(key)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return torch.load(io.BytesIO(stream.read()), map_location="cpu", weights_only=False)


def train_cell(config: dict) -> None:
    """One trial of a cell: ``config`` holds the cell, the stage, the seed and the hyper-parameters."""
    started = time.perf_counter()  # trial_seconds: the trial's own work, for the study-overhead benchmark
    config = {**config, **config.get("spec", {})}
    torch.set_num_threads(int(config.get("threads") or 1))
    cfg = train_config(config)
    key = trial_key(config)
    resume = load_resume(key)
    if resume is not None and resume.get("final"):
        if config.get("stage") != Stage.FINAL or tune.get_checkpoint() is not None:
            tune.report({"outcome": Outcome.COMPLETED, **resume["final"]})  # finished before an interruption
            return
        resume = None  # a final run that ended unseen by Tune's snapshot: its model is in no checkpoint, train again

    restored_from = int(resume["epoch"]) if resume is not None else 0

    def on_epoch(record: dict, state) -> None:
        # reported first: ``tune.report`` returns once the driver has taken the result, so the state saved
        # after it never runs ahead of the record (a kill in between retrains this epoch, logged once)
        tune.report({**record, "restored_from_epoch": restored_from, "trial_seconds": time.perf_counter() - started})
        save_resume(state(), key)

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
        if config.get("stage") == Stage.FINAL:
            torch.save(result.model.state_dict(), Path(directory) / MODEL_FILE)
            spec = {"dataset": cfg.dataset, "variant": cfg.variant, "st_transform": cfg.st_transform}
            (Path(directory) / SPEC_FILE).write_text(json.dumps(spec))
        final["trial_seconds"] = time.perf_counter() - started
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(directory))
    save_resume({"final": result.metrics, "epoch": cfg.epochs}, key)  # the weights are in the final checkpoint: drop them here

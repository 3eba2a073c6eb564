"""One MLflow child run per trial, under the study's parent run, written from the driver.

Runs are created and closed by a Tune callback on the driver, which sees every trial end —
including trials Tune stops with SIGTERM after a pruning decision — so no run is left RUNNING.
Workers never talk to MLflow: figures and final models travel in the trial's last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS, DONE, TRIAL_ID

from study.tracking.contract import ARTIFACT_FILES, FIGURES_PATH, MODEL_FILE, SPEC_FILE, Stage, Tag, hparams_hash
from study.trial_schema import HPARAM_KEYS, mlflow_params, trial_key
from trainables.outcome import Outcome

log = logging.getLogger(__name__)


EPOCH_METRICS = ("train_loss", "val_error", "val_pose_sd", "val_angle_slope", "images_per_s", "lr", "epoch_seconds",
                 "restored_from_epoch", "trial_seconds")
VALIDATION_PREFIX = "val_"  # every per-epoch validation diagnostic the trainable reports (θ's spread, live units) is logged

SPOOLS: dict = {}  # study id -> the driver's TrackingSpool for it


class TrialTracker(tune.Callback):
    """Tune callback: child run per trial with the tag contract, metrics, figures and final models.

    It only turns Tune's events into updates for the study's ``TrackingSpool``, which applies them
    in a background thread and keeps them on disk while the tracking server is down.
    """

    def __init__(self, spool, parent_run_id: str, study_id: str, searcher=None):
        SPOOLS[study_id] = spool
        self.parent_run_id, self.study_id = parent_run_id, study_id
        self.searcher = searcher  # read at use time: Tuner.restore replaces the searcher's state in place
        self.opened: set[str] = set()

    @property
    def spool(self):
        """Looked up, not stored: Tune pickles callbacks and ``Tuner.restore`` brings this one back."""
        return SPOOLS[self.study_id]

    @staticmethod
    def key(trial) -> str:
        """The trial's run, across Tune runs and driver restarts: its trial key (``study.trial_schema``)."""
        return trial_key({**trial.config, **trial.config.get("spec", {})}) or trial.trial_id

    def on_trial_start(self, iteration, trials, trial, **info):
        key = self.key(trial)
        if key in self.opened:
            return
        self.opened.add(key)
        config = {**trial.config, **trial.config.get("spec", {})}
        tags = {Tag.PARENT: self.parent_run_id, Tag.STUDY_ID: self.study_id, Tag.CELL: config["cell"],
                Tag.STAGE: config["stage"], Tag.SEED: str(config.get("seed", 0)), Tag.TRIAL_ID: trial.trial_id,
                Tag.TRIAL_KEY: key, Tag.OUTCOME: Outcome.RUNNING}
        if all(k in config for k in HPARAM_KEYS):
            tags[Tag.HPARAMS_HASH] = hparams_hash(config)  # which configuration: finals of a best share its hash
        if config["stage"] == Stage.FINAL and "selected_from" in config:
            tags[Tag.SELECTED_FROM] = str(config["selected_from"])
        name = f"{config['cell']} {config['stage']} #{config.get('trial_number', config.get('seed'))}"
        self.spool.submit("open", key=key, run_name=name, tags=tags, params=mlflow_params(config))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        now = int(time.time() * 1000)
        if result.get("outcome"):
            values = {k: v for k, v in result.items() if is_end_metric(k) and isinstance(v, (int, float))
                      and not isinstance(v, bool)}
            step, epoch = int(result.get("epochs_completed", result.get("epoch", 0))), None
        else:
            values = {k: v for k, v in result.items() if (k in EPOCH_METRICS or k.startswith(VALIDATION_PREFIX))
                      and isinstance(v, (int, float)) and not isinstance(v, bool)}
            step = epoch = int(result.get("epoch", 0))
        if values:
            self.spool.submit("metrics", key=self.key(trial), epoch=epoch,
                              metrics=[[k, float(v), now, step] for k, v in values.items()])

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        pruned = self.searcher.pruned if self.searcher is not None else set()
        outcome = last.get("outcome") or (Outcome.PRUNED if trial.trial_id in pruned else Outcome.STOPPED)
        tags = {Tag.OUTCOME: outcome}
        if outcome == Outcome.COMPLETED:
            self._keep_checkpoint_files(trial)
            if last.get("node_id"):
                tags[Tag.NODE_ID] = last["node_id"]
        if outcome == Outcome.DIVERGED:
            tags[Tag.FAILURE_REASON] = last.get("message", Outcome.DIVERGED)
        status = {Outcome.COMPLETED: "FINISHED", Outcome.PRUNED: "FINISHED", Outcome.DIVERGED: "FAILED", Outcome.STOPPED: "KILLED"}[outcome]
        self.spool.submit("end", key=self.key(trial), status=status, tags=tags)

    def on_trial_error(self, iteration, trials, trial, **info):
        reason = (getattr(trial, "error_message", None) or "trial raised an error").strip().splitlines()[-1:]
        self.spool.submit("end", key=self.key(trial), status="FAILED",
                          tags={Tag.OUTCOME: Outcome.FAILED, Tag.FAILURE_REASON: reason[0] if reason else "error"})

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A worker or node died: Tune restarts the trial from its last checkpoint; the run says so."""
        reason = (getattr(trial, "error_message", None) or "worker lost").strip().splitlines()[-1:]
        self.spool.submit("tags", key=self.key(trial), tags={Tag.RESTARTS: str(trial.run_metadata.num_failures),
                                                             Tag.LAST_RESTART_REASON: (reason or ["worker lost"])[0][:500]})

    def on_experiment_end(self, trials, **info):
        for trial in trials:  # anything still open was interrupted by the user or the time budget
            if self.key(trial) in self.opened:
                self.spool.submit("end", key=self.key(trial), status="KILLED", only_if_running=True,
                                  tags={Tag.OUTCOME: Outcome.KILLED})

    def _keep_checkpoint_files(self, trial) -> None:
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        try:
            with checkpoint.as_directory() as directory:
                files = [Path(directory) / name for name in ARTIFACT_FILES if (Path(directory) / name).exists()]
                kept = self.spool.keep_files(files, self.key(trial))
            self.spool.submit("files", key=self.key(trial), dir=str(kept), artifact_path=FIGURES_PATH)
        except Exception as err:  # noqa: BLE001 - artifacts are best effort: never fail a finished trial over them
            log.warning("could not keep the artifacts of %s: %s", trial.trial_id, err)


# What a trial's final report carries besides its end metrics: Tune's own keys, the position in the run and
# the per-epoch curves (logged per epoch). Every other number it reports is an end metric and is logged, so a
# metric a dataset or the evaluation adds reaches MLflow without a list to update.
TUNE_KEYS = frozenset({*AUTO_RESULT_KEYS, DONE, TRIAL_ID})
POSITION_KEYS = ("epoch", "step", "epochs_completed")


def is_end_metric(key: str) -> bool:
    if key in TUNE_KEYS or key in POSITION_KEYS:
        return False
    return key == "trial_seconds" or not (key in EPOCH_METRICS or key.startswith(VALIDATION_PREFIX))


def log_final_model(tracking_uri: str, run_id: str, directory: Path) -> None:
    """Log a final-stage model as an MLflow PyTorch model in MLflow's safe format (``pt2``: a torch.export
    program, loadable without unpickling code), rebuilt from its state dict; its spec (dataset, variant, ST)
    goes with it as the model's metadata, and ``model.pt`` + ``model_spec.json`` stay beside it as artifacts."""
    import mlflow.pytorch
    import torch
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from trainables.models import STNClassifier

    spec = json.loads((directory / SPEC_FILE).read_text())
    model = STNClassifier(spec["dataset"], spec["variant"], spec["st_transform"])
    model.load_state_dict(torch.load(directory / MODEL_FILE, map_location="cpu"))
    requirements = [f"torch=={metadata.version('torch')}", f"torchvision=={metadata.version('torchvision')}"]
    side = model.arch.input_side
    example = np.zeros((2, model.arch.in_channels, side, side), dtype=np.float32)  # 2: the batch stays dynamic
    # mlflow's fluent API needs the global tracking URI, and setting it also sets $MLFLOW_TRACKING_URI:
    # both are put back so a later study or report in this process keeps its own default store
    env_before, uri_before = os.environ.get("MLFLOW_TRACKING_URI"), tracking_utils._tracking_uri
    try:
        mlflow.set_tracking_uri(tracking_uri)
        with mlflow.start_run(run_id=run_id, nested=True):
            mlflow.pytorch.log_model(model.eval(), name="model", pip_requirements=requirements, input_example=example,
                                     serialization_format="pt2", metadata=spec)
    finally:
        mlflow.set_tracking_uri(uri_before)
        if env_before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env_before

"""Ray Tune plumbing shared by the search and final stages: the run config, and continuing an unfinished run."""

from __future__ import annotations

import json
import logging
import os

from ray import tune
from ray.tune.utils.util import warn_if_slow

from study.object_fs import tune_storage
from study.paths import StudyDir

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tune's own per-trial result files (JSON, CSV, TensorBoard) would repeat what MLflow records, at a cost of
# ~40 % of the driver's time per result (docs/performance.md): MLflow is the study's one record of results.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# ... so the result grid Tune builds at the end of a run finds no result files: that is expected, not news
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
# Tune warns of any step of its loop over 0.5 s; the snapshot before each new final run (study.search.schedulers)
# can take about that on 2 cores by design. A user's own threshold is kept; Tune reads it when it is imported.
os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "5")
warn_if_slow.DEFAULT_THRESHOLD = float(os.environ["TUNE_WARN_THRESHOLD_S"])


def run_config(name: str, storage_uri: str, callbacks: list) -> tune.RunConfig:
    # Tune's newer console output prints a config box, the run's folder and a TensorBoard hint even at
    # verbose=0; its classic reporter (RAY_AIR_NEW_OUTPUT=0, Ray's documented switch) prints nothing at 0:
    # our progress lines are the study's output. A user's own setting is kept.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    storage_path, storage_filesystem = tune_storage(storage_uri)
    return tune.RunConfig(name=name, storage_path=storage_path, storage_filesystem=storage_filesystem,
                          callbacks=callbacks, verbose=0,
                          checkpoint_config=tune.CheckpointConfig(),  # one per trial: its final result (study.trial)
                          failure_config=tune.FailureConfig(max_failures=2))


def restorable(directory: StudyDir, name: str) -> bool:
    """An unfinished Tune run can be continued only if its saved state holds trials."""
    states = [f for f in directory.listdir(name) if f.startswith("experiment_state-") and f.endswith(".json")]
    if not states:
        return False
    try:
        return bool(json.loads(directory.read_text(f"{name}/{max(states)}")).get("trial_data"))
    except (OSError, ValueError):
        return False


def restore(directory: StudyDir, name: str, trainable) -> tune.Tuner:
    """The unfinished run ``name``: its running and errored trials continue from their last checkpoints."""
    path, filesystem = tune_storage(f"{directory.uri}/{name}")
    return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                              restart_errored=False, storage_filesystem=filesystem)


def with_resources(trainable, cpus: float, gpus: float):
    return tune.with_resources(trainable, {"cpu": cpus, "gpu": gpus})

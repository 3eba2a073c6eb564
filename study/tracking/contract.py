"""The names a study's record uses in MLflow: artifact files, the tags the driver decides, the queries.

One owner for each name: the trial writes these files into its checkpoint, the spool logs them, the
report reads them back, ``--list`` and the driver query the runs they tag.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum

from trainables.figures import ANGLE_PLOT_FILE, EXAMPLES_FILE, FIGURES_FILE
from trainables.outcome import Outcome
from trainables.train_config import SEARCHED, options_of

MODEL_FILE, SPEC_FILE = "model.pt", "model_spec.json"  # a final run's state dict and what rebuilds its network
ARTIFACT_FILES = (ANGLE_PLOT_FILE, EXAMPLES_FILE, FIGURES_FILE, MODEL_FILE, SPEC_FILE)
FIGURES_PATH = "figures"  # the artifact folder of a trial's run


class Tag(StrEnum):
    """The tag keys of a study's runs: the parent run's and each trial run's."""

    STUDY_ID = "study_id"
    STAGE = "stage"  # a Stage
    CELL = "cell"
    SEED = "seed"
    TRIAL_ID = "trial_id"  # Tune's id of the trial that opened the run
    TRIAL_KEY = "trial_key"  # study.trial_schema.trial_key: the run's identity across Tune runs and restarts
    OUTCOME = "outcome"  # an Outcome
    HPARAMS_HASH = "hparams_hash"
    SELECTED_FROM = "selected_from_trial"  # a final run: the search trial whose configuration it retrains
    NODE_ID = "node_id"
    FAILURE_REASON = "failure_reason"
    RESTARTS = "restarts"
    LAST_RESTART_REASON = "last_restart_reason"
    PARENT = "mlflow.parentRunId"
    NOTE = "mlflow.note.content"


class Stage(StrEnum):
    """A run's stage: a search trial, a final run, or the study's parent run."""

    SEARCH = "search"
    FINAL = "final"
    STUDY = "study"


class Basis(StrEnum):
    """What the report's numbers for a cell stand on."""

    FINAL = "final"  # the completed final runs of the cell's chosen configuration
    VAL_BEST = "val-best search trial"  # no final run: the search trial with the lowest validation error


BEST_TAG = "best."  # + cell key, on the parent run: the cell's val-best search trial, as the driver chose it


def hparams_hash(config: dict) -> str:
    """A short fingerprint of a configuration's searched hyper-parameters (the ``hparams_hash`` tag): a final run
    names the configuration it retrains, and the report matches finals to their cell's chosen one by it."""
    return hashlib.sha256(json.dumps([str(config[k]) for k in options_of(SEARCHED)]).encode()).hexdigest()[:12]


def best_tags(best_per_cell: dict[str, dict]) -> dict[str, str]:
    """The parent run's tags for each cell's chosen configuration (``PerCellSearcher.best_per_cell``)."""
    return {f"{BEST_TAG}{key}": json.dumps({"trial_number": best["trial_number"], "val_error": best["val_error"],
                                             "hparams_hash": hparams_hash(best["hparams"])})
            for key, best in best_per_cell.items()}


def read_best_tags(tags: dict[str, str]) -> dict[str, dict]:
    """Cell key → the chosen trial (``trial_number``, ``val_error``, ``hparams_hash``) from a parent run's tags."""
    return {key[len(BEST_TAG):]: json.loads(value) for key, value in tags.items() if key.startswith(BEST_TAG)}


PARENT_RUNS = f"tags.{Tag.STAGE} = '{Stage.STUDY}'"  # one per study: where the report finds studies in any tracking store


def study_runs(study_id: str) -> str:
    """Every run of the study: its parent and each trial's run."""
    return f"tags.{Tag.STUDY_ID} = '{study_id}'"


def completed_finals(client, experiment_id: str, study_id: str) -> list:
    """The study's completed final runs in MLflow, their one record (the driver skips them, ``--list`` counts them)."""
    return client.search_runs([experiment_id], f"{study_runs(study_id)} and tags.{Tag.STAGE} = '{Stage.FINAL}' and "
                                               f"tags.{Tag.OUTCOME} = '{Outcome.COMPLETED}'", max_results=50000)

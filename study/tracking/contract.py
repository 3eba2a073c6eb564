"""The names a study's record uses in MLflow: artifact files, the tags the driver decides, the queries.

One owner for each name: the trial writes these files into its checkpoint, the spool logs them, the
report reads them back, ``--list`` and the driver query the runs they tag.
"""

from __future__ import annotations

import json

from trainables.figures import ANGLE_PLOT_FILE, EXAMPLES_FILE, FIGURES_FILE
from trainables.outcome import Outcome

MODEL_FILE, SPEC_FILE = "model.pt", "model_spec.json"  # a final run's state dict and what rebuilds its network
ARTIFACT_FILES = (ANGLE_PLOT_FILE, EXAMPLES_FILE, FIGURES_FILE, MODEL_FILE, SPEC_FILE)
FIGURES_PATH = "figures"  # the artifact folder of a trial's run
BEST_TAG = "best."  # + cell key, on the parent run: the cell's val-best search trial, as the driver chose it


def best_tags(best_per_cell: dict[str, dict]) -> dict[str, str]:
    """The parent run's tags for each cell's chosen configuration (``PerCellSearcher.best_per_cell``)."""
    from study.trial_schema import hparams_hash

    return {f"{BEST_TAG}{key}": json.dumps({"trial_number": best["trial_number"], "val_error": best["val_error"],
                                             "hparams_hash": hparams_hash(best["hparams"])})
            for key, best in best_per_cell.items()}


def read_best_tags(tags: dict[str, str]) -> dict[str, dict]:
    """Cell key → the chosen trial (``trial_number``, ``val_error``, ``hparams_hash``) from a parent run's tags."""
    return {key[len(BEST_TAG):]: json.loads(value) for key, value in tags.items() if key.startswith(BEST_TAG)}


PARENT_RUNS = "tags.stage = 'study'"  # one per study: where the report finds studies in any tracking store


def study_runs(study_id: str) -> str:
    """Every run of the study: its parent and each trial's run."""
    return f"tags.study_id = '{study_id}'"


def completed_finals(client, experiment_id: str, study_id: str) -> list:
    """The study's completed final runs in MLflow, their one record (the driver skips them, ``--list`` counts them)."""
    return client.search_runs([experiment_id], f"tags.study_id = '{study_id}' and tags.stage = 'final' and "
                                               f"tags.outcome = '{Outcome.COMPLETED}'", max_results=50000)

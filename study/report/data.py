"""What the report reads: a study's runs from MLflow only, so it works against any tracking server."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from study.tracking.contract import FIGURES_PATH, PARENT_RUNS, Basis, Stage, Tag, read_best_tags, study_runs
from trainables.datasets import dataset_spec
from trainables.figures import FIGURES_FILE
from trainables.outcome import Outcome
from trainables.registry import ALL_DATASETS, CORE_VARIANTS

# Tables list datasets in registry order (the MNIST family first), each column named by its spec's label
# (the MNIST family by its distortion, the deep datasets by themselves)
DATASET_ORDER = ALL_DATASETS
COLUMN = {d: dataset_spec(d).label for d in ALL_DATASETS}


class ReportError(ValueError):
    """The study cannot be reported; the message is one line."""


@dataclass
class Study:
    study_id: str
    experiment_id: str
    name: str
    parent_run_id: str
    runs: pd.DataFrame  # one row per child run: tags, params (param.*), final metric values


def tracked_studies(client: MlflowClient) -> pd.DataFrame:
    """Every study the tracking store holds, newest first, by its parent run (the store's own record of studies;
    ``study.state`` reads the storage's record, which ``--resume`` and ``--list`` use)."""
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if not experiments:
        return pd.DataFrame(columns=["study_id", "name", "run_id", "start", "status"])
    parents = client.search_runs(list(experiments), PARENT_RUNS, order_by=["attributes.start_time DESC"],
                                 max_results=5000)
    return pd.DataFrame([{"study_id": r.data.tags.get(Tag.STUDY_ID), "name": experiments[r.info.experiment_id],
                          "run_id": r.info.run_id, "experiment_id": r.info.experiment_id,
                          "start": r.info.start_time, "status": r.info.status} for r in parents])


def find_study(client: MlflowClient, wanted: str | None) -> pd.Series:
    """Latest study by default; else a study id, or a study name (its latest launch)."""
    studies = tracked_studies(client)
    if studies.empty:
        raise ReportError("no studies in this tracking store: run `python -m study.launch` first")
    if wanted is None:
        return studies.iloc[0]
    match = studies[(studies["study_id"] == wanted) | (studies["name"] == wanted)]
    if match.empty:
        known = ", ".join(studies["study_id"].head(20))
        raise ReportError(f"unknown study {wanted!r}: studies here: {known}")
    return match.iloc[0]


def load_runs(client: MlflowClient, experiment_id: str, study_id: str) -> pd.DataFrame:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], study_runs(study_id), max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    rows = [{"run_id": r.info.run_id, "status": r.info.status, **r.data.tags,
             **{f"param.{k}": v for k, v in r.data.params.items()}, **r.data.metrics}
            for r in runs if r.data.tags.get(Tag.STAGE) != Stage.STUDY]
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["row"] = [row_label(v, t) for v, t in zip(frame["param.variant"], frame.get("param.st_transform", "affine"), strict=True)]
    return frame


def load_study(client: MlflowClient, wanted: str | None) -> Study:
    """The study's runs, each with the configuration the driver chose for its cell (``chosen_hash``,
    ``chosen_trial``: the parent run's ``best.<cell>`` tags, once a search stage has ended)."""
    found = find_study(client, wanted)
    runs = load_runs(client, found["experiment_id"], found["study_id"])
    chosen = read_best_tags(client.get_run(found["run_id"]).data.tags)
    if not runs.empty:
        runs["chosen_hash"] = [chosen.get(cell, {}).get("hparams_hash") for cell in runs["cell"]]
        runs["chosen_trial"] = [chosen.get(cell, {}).get("trial_number") for cell in runs["cell"]]
    return Study(found["study_id"], found["experiment_id"], found["name"], found["run_id"], runs)


def row_label(variant: str, st_transform: str | float | None) -> str:
    if variant == "CNN" or st_transform in (None, "affine") or not isinstance(st_transform, str):
        return variant
    return f"{variant} [{st_transform}]"


def row_order(labels) -> list[str]:
    """Core variants first in the paper's order (with any ST parameterisation beside its variant), then the rest."""
    def key(label: str):
        variant = label.split(" [")[0]
        return (CORE_VARIANTS.index(variant) if variant in CORE_VARIANTS else len(CORE_VARIANTS), label)

    return sorted(set(labels), key=key)


def resolve_row(labels, name: str) -> str:
    """A compared variant's row: the exact label, else that variant's only parameterised row (e.g.
    ``STN-SL1`` → ``STN-SL1 [rotation]`` in a rotation-parameterised study)."""
    labels = set(labels)
    if name in labels:
        return name
    matches = [label for label in labels if label.startswith(f"{name} [")]
    return matches[0] if len(matches) == 1 else name


def datasets_in(runs: pd.DataFrame, posed: bool = False) -> list[str]:
    """The study's datasets in table order; ``posed``: only those with an applied transform (pose metrics)."""
    present = set(runs["param.dataset"]) if not runs.empty else set()
    return [d for d in DATASET_ORDER if d in present and (not posed or dataset_spec(d).pose_kind)]


def _val_best(search: pd.DataFrame) -> pd.DataFrame:
    """The cell's chosen search trial as the driver recorded it (Optuna's ``best_trial``, the ``best.<cell>`` tag).

    The ranking below stays for one case only: a study stopped before its search stage ended has no choice
    recorded yet, and its report still shows each cell's best trial so far (marked † as a search trial); it
    ranks as Optuna does (lowest val_error, then the earliest trial)."""
    if "chosen_trial" in search and search["chosen_trial"].notna().any():
        number = search["chosen_trial"].dropna().iloc[0]
        chosen = search[pd.to_numeric(search.get("param.trial_number"), errors="coerce") == number]
        if not chosen.empty:
            return chosen.head(1)
    ranked = search.assign(_n=pd.to_numeric(search.get("param.trial_number", 0), errors="coerce"))
    return ranked.sort_values(["val_error", "_n"]).head(1).drop(columns="_n")


def _current_finals(cell: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame:
    """The final runs of the cell's current val-best configuration (an extension may have found a new best:
    finals of an earlier best are superseded, never averaged in). Without the tag on both stages (runs the study's
    tracker did not log) there is nothing to match on: every final counts."""
    if "hparams_hash" not in final or final["hparams_hash"].isna().all():
        return final
    if "chosen_hash" in cell and cell["chosen_hash"].notna().any():
        return final[final["hparams_hash"] == cell["chosen_hash"].dropna().iloc[0]]
    search = cell[(cell[Tag.STAGE] == Stage.SEARCH) & (cell[Tag.OUTCOME] == Outcome.COMPLETED)]
    if search.empty or "hparams_hash" not in search or search["hparams_hash"].isna().all():
        return final
    best = _val_best(search)["hparams_hash"].iloc[0]
    return final[final["hparams_hash"] == best]


def reported_runs(runs: pd.DataFrame, dataset: str, row: str) -> tuple[pd.DataFrame, str]:
    """The runs that stand for a cell: the completed final runs of its current best, else its val-best search trial.

    Returns (runs, basis) with basis ``final``, ``val-best search trial`` or a reason for none.
    """
    cell = runs[(runs["param.dataset"] == dataset) & (runs["row"] == row)]
    if cell.empty:
        return cell, "not in this study"
    final = _current_finals(cell, cell[(cell[Tag.STAGE] == Stage.FINAL) & (cell[Tag.OUTCOME] == Outcome.COMPLETED)])
    if not final.empty:
        return final, Basis.FINAL
    search = cell[(cell[Tag.STAGE] == Stage.SEARCH) & (cell[Tag.OUTCOME] == Outcome.COMPLETED)]
    if search.empty:
        failed = cell["outcome"].isin([Outcome.DIVERGED, Outcome.FAILED]).sum()
        return search, f"no completed trial ({failed} diverged/failed)"
    return _val_best(search), Basis.VAL_BEST


def superseded_finals(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed final runs that retrained an earlier best of their cell (listed, not reported)."""
    if runs.empty or "hparams_hash" not in runs:
        return runs.iloc[0:0]
    kept = set()
    for (dataset, row), _ in runs.groupby(["param.dataset", "row"]):
        chosen, basis = reported_runs(runs, dataset, row)
        if basis == Basis.FINAL:
            kept |= set(chosen["run_id"])
    final = runs[(runs[Tag.STAGE] == Stage.FINAL) & (runs[Tag.OUTCOME] == Outcome.COMPLETED)]
    return final[~final["run_id"].isin(kept)]


def failure_counts(runs: pd.DataFrame) -> dict[str, dict[str, int]]:
    bad = runs[runs["outcome"].isin([Outcome.DIVERGED, Outcome.FAILED])] if not runs.empty else runs
    return {cell: group["outcome"].value_counts().to_dict() for cell, group in bad.groupby("cell")}


def figure_data(client: MlflowClient, run_id: str, missing: list | None = None) -> dict[str, np.ndarray] | None:
    """The raw figure arrays a trial logged (figures/figures.npz), or None; why not is added to ``missing``."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run_id, f"{FIGURES_PATH}/{FIGURES_FILE}", tmp)
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
    except Exception as err:  # noqa: BLE001 - e.g. none logged, the artifact store unreachable, a damaged file
        if missing is not None:
            missing.append((run_id, (str(err).strip().splitlines() or [type(err).__name__])[0][:200]))
        return None


def learning_curves(client: MlflowClient, runs: pd.DataFrame, metric: str = "val_error") -> pd.DataFrame:
    rows = []
    for _, run in runs.iterrows():
        for m in client.get_metric_history(run["run_id"], metric):
            rows.append({"run_id": run["run_id"], "cell": run["cell"], "stage": run["stage"],
                         "seed": run.get("seed"), "epoch": m.step, metric: m.value})
    return pd.DataFrame(rows)


def data_root_of(runs: pd.DataFrame, dataset: str) -> str | None:
    """The data_root a dataset's runs read (an MLflow param of every run), or None: the embedded subset, or
    runs recorded before the param was."""
    if "param.data_root" not in runs.columns:
        return None
    roots = runs.loc[runs["param.dataset"] == dataset, "param.data_root"].dropna()
    roots = roots[roots != "None"]
    return str(roots.iloc[0]) if len(roots) else None


def pose_unit(dataset: str) -> str:
    return dataset_spec(dataset).pose_unit


def out_dir_for(study_id: str, out: str | None) -> Path:
    return Path(out) if out else Path.cwd() / "reports" / study_id

"""The per-cell table printed at the end of a launch, read back from MLflow (what the UI shows)."""

from __future__ import annotations

import math

import pandas as pd
from mlflow.tracking import MlflowClient


def study_runs(tracking_uri: str, study_id: str) -> pd.DataFrame:
    """One row per child run of the study: tags, params and the end-of-trial metrics."""
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs, token = [], None
    while True:
        page = client.search_runs(experiments, f"tags.study_id = '{study_id}'", max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    rows = []
    for run in runs:
        if run.data.tags.get("stage") == "study":
            continue
        rows.append({"run_id": run.info.run_id, "status": run.info.status, **run.data.tags,
                     **{f"param.{k}": v for k, v in run.data.params.items()}, **run.data.metrics})
    return pd.DataFrame(rows)


def _mean_sd(values: pd.Series, scale: float = 100.0, digits: int = 1) -> str:
    values = values.dropna()
    if values.empty:
        return "—"
    if len(values) == 1:
        return f"{scale * values.iloc[0]:.{digits}f} (n=1)"
    return f"{scale * values.mean():.{digits}f} ± {scale * values.std(ddof=1):.{digits}f} (n={len(values)})"


def cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for cell, group in runs.groupby("cell", sort=False):
        search = group[group["stage"] == "search"]
        final = group[group["stage"] == "final"]
        done = search[search["outcome"] == "completed"]
        best_val = done["val_error"].min() if "val_error" in done and not done.empty else math.nan
        shown = final[final["outcome"] == "completed"] if not final.empty else done.nsmallest(1, "val_error") if not done.empty else done
        label = "final" if not final.empty else "val-best search trial"
        rows.append({
            "cell": cell,
            "search done/pruned/failed": f"{len(done)}/{(search['outcome'] == 'pruned').sum()}/"
                                         f"{search['outcome'].isin(['diverged', 'failed']).sum()}",
            "best val %": "—" if math.isnan(best_val) else f"{100 * best_val:.1f}",
            f"test error % ({label})": _mean_sd(shown.get("test_error", pd.Series(dtype=float))),
            "pose SD": _mean_sd(shown.get("pose_sd", pd.Series(dtype=float)), scale=1.0),
            "angle slope": _mean_sd(shown.get("angle_slope", pd.Series(dtype=float)), scale=1.0, digits=2),
        })
    return pd.DataFrame(rows)


def print_summary(tracking_uri: str, study_id: str) -> None:
    runs = study_runs(tracking_uri, study_id)
    if runs.empty:
        print(f"study {study_id}: no runs recorded")
        return
    print()
    print(cell_table(runs).to_markdown(index=False) if _has_tabulate() else cell_table(runs).to_string(index=False))
    print()


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False

"""The depth table of the ICPR study: test error by ST depth X, one row per sharing mode.

The paper's question for the deep datasets is how C (warp the depth-X feature map), SL (warp the
input, localise with the classifier's own first X blocks) and DL (with a copy of them) behave as X
grows, so the accuracy table's one-row-per-variant layout is re-cut: rows C / SL / DL (and iterated
rows such as SLx2), columns X, cells test error % mean ± std over the final seeds (n).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from study.report.data import reported_runs
from study.report.tables import DASH, Table, _best, _common_notes, mean_sd
from study.tracking.contract import Basis
from trainables.registry import DEEP_DATASETS, SHARINGS, VariantError, parse_variant

ROW_ORDER = ("C", "SL", "DL")


def _row_name(sharing: str, iterations: int) -> str:
    return SHARINGS[sharing] + (f"x{iterations}" if iterations > 1 else "")


def depth_grid(runs: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """One record per affine STN variant of ``dataset``: row, depth, mean / std / n of test error %, basis."""
    records = []
    labels = runs.loc[runs["param.dataset"] == dataset, "row"].unique() if not runs.empty else []
    for label in labels:
        try:
            spec = parse_variant(label)  # a parameterised row ("STN-C0 [rotation]") is not a variant name
        except VariantError:
            continue
        if not spec.has_st:
            continue
        chosen, basis = reported_runs(runs, dataset, label)
        values = (chosen["test_error"] if "test_error" in chosen else pd.Series(dtype=float)).dropna() * 100.0
        records.append({"row": _row_name(spec.sharing, spec.iterations), "iterations": spec.iterations,
                        "sharing": spec.sharing, "depth": spec.depth, "variant": label, "basis": basis,
                        "n": len(values), "mean": values.mean() if len(values) else np.nan,
                        "sd": values.std(ddof=1) if len(values) > 1 else (0.0 if len(values) else np.nan),
                        "values": values.tolist()})
    frame = pd.DataFrame(records, columns=["row", "iterations", "sharing", "depth", "variant", "basis", "n", "mean",
                                           "sd", "values"])
    order = {code: i for i, code in enumerate(ROW_ORDER)}
    frame["_key"] = [(it, order[SHARINGS[s]]) for it, s in zip(frame["iterations"], frame["sharing"], strict=True)]
    return frame.sort_values(["_key", "depth"]).drop(columns="_key").reset_index(drop=True)


def reference_cnn(runs: pd.DataFrame, dataset: str) -> tuple[list[float], str]:
    """The plain CNN's test errors % on ``dataset`` (the line every ST row is compared with) and their basis."""
    chosen, basis = reported_runs(runs, dataset, "CNN")
    values = chosen["test_error"].dropna() * 100.0 if "test_error" in chosen else pd.Series(dtype=float)
    return values.tolist(), basis


def depth_table(runs: pd.DataFrame, dataset: str) -> Table | None:
    """Rows C / SL / DL (then iterated rows), columns X = depth; None when the dataset has no ST rows."""
    grid = depth_grid(runs, dataset)
    if grid.empty:
        return None
    rows = list(dict.fromkeys(grid["row"]))
    depths = [f"X={d}" for d in sorted(grid["depth"].unique())]
    shown = pd.DataFrame(DASH, index=pd.Index(rows, name="sharing"), columns=depths)
    means = pd.DataFrame(np.nan, index=shown.index, columns=depths)
    bases = set()
    for _, rec in grid.iterrows():
        column = f"X={rec['depth']}"
        if rec["n"] == 0:
            shown.loc[rec["row"], column] = DASH if rec["basis"] in (Basis.FINAL, Basis.VAL_BEST) \
                else f"{DASH} ({rec['basis']})"
            continue
        text = mean_sd(rec["values"], 1.0, 2)
        if rec["basis"] != Basis.FINAL:
            text += " †"
            bases.add(rec["basis"])
        shown.loc[rec["row"], column] = text
        means.loc[rec["row"], column] = rec["mean"]
    cnn, basis = reference_cnn(runs, dataset)
    subset = runs[runs["param.dataset"] == dataset]
    notes = [f"Test error % on {dataset} by ST depth X (classifier blocks before the ST), mean ± std over "
             "final-stage seeds (n); best per column in bold. C: the ST warps the depth-X feature map "
             "(C at X=0 is STN-C0, which warps the input); SL: it warps the input, localised by the classifier's "
             "own first X blocks; DL: by a copy of them; xN: N iterations."]
    if cnn:
        notes.append(f"CNN (no ST): {mean_sd(cnn, 1.0, 2)}" + ("" if basis == Basis.FINAL else " †"))
    notes += _common_notes(subset, bases)
    return Table(f"depth_{dataset}", f"{dataset}: test error (%) by ST depth", shown, _best(means), notes)


def depth_tables(runs: pd.DataFrame) -> list[Table]:
    """One depth table per deep dataset of the study."""
    present = set(runs["param.dataset"]) if not runs.empty else set()
    tables = [depth_table(runs, d) for d in DEEP_DATASETS if d in present]
    return [t for t in tables if t is not None]

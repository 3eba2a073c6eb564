"""The paper's tables (accuracy, alignment, Eq. 1) and the seed-noise comparison under each."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from study.report.data import COLUMN, datasets_in, failure_counts, pose_unit, reported_runs, resolve_row, row_order, superseded_finals
from study.tracking.contract import Basis
from trainables.datasets import dataset_spec

DASH = "—"
EXTRA_COLUMNS = {"rotation_consistency_deg": "rotation consistency (°)"}  # a spec's extra metric, as a column heading


@dataclass
class Table:
    name: str  # file stem: accuracy, alignment, eq1
    title: str
    cells: pd.DataFrame  # display strings
    best: pd.DataFrame | None = None  # True where a cell is its column's best
    notes: list[str] = field(default_factory=list)


def mean_sd(values, scale: float = 1.0, digits: int = 1) -> str:
    values = [scale * float(v) for v in values if v is not None and not pd.isna(v)]
    if not values:
        return DASH
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (n=1)"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f} (n={len(values)})"


ALPHA = 0.05


def hedges_g(a: list[float], b: list[float]) -> float:
    """Cohen's d with the pooled SD, times the small-sample correction 1 − 3 / (4 (n_a + n_b) − 9)."""
    df = len(a) + len(b) - 2
    pooled = math.sqrt(((len(a) - 1) * np.var(a, ddof=1) + (len(b) - 1) * np.var(b, ddof=1)) / df)
    if pooled == 0:
        return math.nan
    return (np.mean(a) - np.mean(b)) / pooled * (1 - 3 / (4 * df - 1))


def welch_ci(a: list[float], b: list[float], result, level: float = 0.95) -> tuple[float, float]:
    """The Welch CI of mean(a) − mean(b): scipy's when it has one, else Welch–Satterthwaite by hand."""
    if hasattr(result, "confidence_interval"):
        low, high = result.confidence_interval(level)
        return float(low), float(high)
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, df) * math.sqrt(va + vb)
    diff = np.mean(a) - np.mean(b)
    return float(diff - half), float(diff + half)


def welch(a, b) -> dict:
    """Welch's t-test of two samples with the mean difference a − b, its 95 % CI and Hedges' g;
    ``None`` p when either has fewer than 2 values."""
    a, b = [float(x) for x in a if not pd.isna(x)], [float(x) for x in b if not pd.isna(x)]
    out = {"n_a": len(a), "n_b": len(b), "mean_a": np.mean(a) if a else math.nan, "mean_b": np.mean(b) if b else math.nan}
    if len(a) < 2 or len(b) < 2:
        return {**out, "t": math.nan, "p": None}
    result = stats.ttest_ind(a, b, equal_var=False)
    low, high = welch_ci(a, b, result)
    return {**out, "t": float(result.statistic), "p": float(result.pvalue), "diff": float(np.mean(a) - np.mean(b)),
            "ci_low": low, "ci_high": high, "g": float(hedges_g(a, b))}


def comparison_notes(runs: pd.DataFrame, pair: tuple[str, str], metric: str, scale: float, unit: str) -> list[str]:
    """Per dataset: A − B with its 95 % Welch CI, Hedges' g and Welch's p. Above α the wording is "no
    detectable difference at n = …": with 2–3 seeds a test cannot show that two variants are the same."""
    a, b = (resolve_row(runs["row"].unique(), name) for name in pair)
    notes = []
    for dataset in datasets_in(runs):
        ra, _ = reported_runs(runs, dataset, a)
        rb, _ = reported_runs(runs, dataset, b)
        if ra.empty or rb.empty or metric not in ra or metric not in rb or ra[metric].isna().all() \
                or rb[metric].isna().all():
            continue
        r = welch(ra[metric] * scale, rb[metric] * scale)
        head = (f"{COLUMN[dataset]}: {a} {r['mean_a']:.2f} vs {b} {r['mean_b']:.2f} {unit} "
                f"(n = {r['n_a']}, {r['n_b']})")
        if r["p"] is None:
            notes.append(f"{head}: not enough seeds for a test (need n ≥ 2 each)")
            continue
        stats_text = (f"{a} − {b} = {r['diff']:+.2f} {unit} (95 % CI {r['ci_low']:.2f} to {r['ci_high']:.2f}), "
                      f"Hedges' g = {r['g']:.2f}, Welch t = {r['t']:.2f}, p = {r['p']:.3g}")
        if r["p"] < ALPHA:
            verdict = f"{a} is significantly {'lower' if r['diff'] < 0 else 'higher'} than {b}"
        else:
            verdict = f"no detectable difference at n = {r['n_a']}, {r['n_b']}"
        notes.append(f"{head}: {stats_text}: {verdict} (α = {ALPHA:g})")
    return notes


def _grid(runs: pd.DataFrame, columns: list[tuple[str, str, str, float, int]]):
    """columns: (label, dataset, metric, scale, digits). Returns display frame, means frame, bases."""
    rows = row_order(runs["row"].unique())
    shown = pd.DataFrame(DASH, index=rows, columns=[c[0] for c in columns])
    means = pd.DataFrame(np.nan, index=rows, columns=[c[0] for c in columns])
    bases = set()
    for label, dataset, metric, scale, digits in columns:
        for row in rows:
            chosen, basis = reported_runs(runs, dataset, row)
            if chosen.empty:
                if basis != "not in this study":
                    shown.loc[row, label] = f"{DASH} ({basis})"
                continue
            values = chosen[metric] if metric in chosen else pd.Series(dtype=float)
            if values.dropna().empty:
                shown.loc[row, label] = f"{DASH} (no ST)" if row == "CNN" else DASH
                continue
            text = mean_sd(values, scale, digits)
            if basis != Basis.FINAL:
                text += " †"
                bases.add(basis)
            shown.loc[row, label] = text
            means.loc[row, label] = float(values.mean()) * scale
    shown.index.name = means.index.name = "variant"
    return shown, means, bases


def _best(means: pd.DataFrame, lower_is_better: bool = True) -> pd.DataFrame:
    best = pd.DataFrame(False, index=means.index, columns=means.columns)
    for column in means.columns:
        if means[column].notna().any():
            best.loc[means[column].idxmin() if lower_is_better else means[column].idxmax(), column] = True
    return best


def _common_notes(runs: pd.DataFrame, bases: set[str]) -> list[str]:
    notes = []
    if bases:
        notes.append("† no final stage for that cell: its val-best search trial (selected on val error, never test)")
    old = superseded_finals(runs)
    if not old.empty:
        parts = [f"{cell}: seeds {', '.join(sorted(g['seed'].astype(str)))} of trial #{g['selected_from_trial'].iloc[0]}"
                 for (cell, _), g in old.groupby(["cell", "selected_from_trial"])]
        notes.append("Superseded final runs (an extension found a better configuration; not in the table): "
                     + "; ".join(parts))
    failures = failure_counts(runs)
    if failures:
        parts = [f"{cell}: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()) for cell, counts in failures.items()]
        notes.append("Diverged / failed trials: " + "; ".join(parts))
    else:
        notes.append("Diverged / failed trials: none")
    return notes


def accuracy_table(runs: pd.DataFrame, pair: tuple[str, str]) -> Table:
    columns = [(COLUMN[d], d, "test_error", 100.0, 2) for d in datasets_in(runs)]
    shown, means, bases = _grid(runs, columns)
    notes = ["Test error % (mean of K randomised test passes per run, K = test_passes, 10 by default), mean ± std over final-stage seeds; "
             "best per column in bold.", *_common_notes(runs, bases)]
    notes += comparison_notes(runs, pair, "test_error", 100.0, "%")
    return Table("accuracy", "Accuracy: test error (%)", shown, _best(means), notes)


def alignment_table(runs: pd.DataFrame, pair: tuple[str, str]) -> Table:
    columns = []
    for d in datasets_in(runs, posed=True):  # SVHN and PlanktonSet have no applied transform to measure
        columns.append((f"{COLUMN[d]} pose SD ({pose_unit(d)})", d, "pose_sd", 1.0, 2))
        if "pose_sd_v1" in runs.columns:  # runs recorded before the v1 formulas were added have none
            columns.append((f"{COLUMN[d]} pose SD, v1 formulas", d, "pose_sd_v1", 1.0, 2))
        columns.append((f"{COLUMN[d]} feature misalignment", d, "feature_misalignment", 1.0, 3))
        if dataset_spec(d).has_slope:
            columns.append((f"{COLUMN[d]} angle slope", d, "angle_slope", 1.0, 2))
    for d in datasets_in(runs):  # e.g. PlanktonSet: no pose, but the rotation consistency of turned copies
        for metric in (m for m in dataset_spec(d).extra_metrics if m in runs.columns):
            columns.append((f"{COLUMN[d]} {EXTRA_COLUMNS.get(metric, metric)}", d, metric, 1.0, 1))
    shown, means, bases = _grid(runs, columns)
    best = _best(means)
    for column in [c for c in means.columns if "slope" in c]:  # a canonicalising ST has slope −1
        best[column] = False
        if means[column].notna().any():
            best.loc[(means[column] + 1).abs().idxmin(), column] = True
    notes = ["Pose SD: pooled within-class SD of the final pose (lower = better aligned), by the formulas of the "
             "authors' ICPR-era code; 'v1 formulas': by those of the code released with arXiv 2001.05858 v1 (the "
             "angle of the inverse θ's first row; shift × 30 px for every variant; scale as a per-axis log2 "
             "vector, so its unit differs). Feature misalignment: "
             "0 = the post-ST feature map of a transformed digit equals that of the original. Angle slope: "
             "orthogonal regression of predicted on applied rotation (−1 = undoes rotations, 0 = ignores them). "
             "Rotation consistency (PlanktonSet): mean deviation mod 180° of the final angles of 17 turned copies of "
             "each test image (0 = every copy ends on one axis; 47.6 = an ST that does not rotate).",
             *_common_notes(runs, bases)]
    notes += comparison_notes(runs, pair, "pose_sd", 1.0, "pose-SD units")
    notes += [f"angle slope, {n}" for n in comparison_notes(runs, pair, "angle_slope", 1.0, "(slope)")]
    return Table("alignment", "Alignment: pose SD, feature-map misalignment and angle slope", shown, best, notes)


def eq1_table(runs: pd.DataFrame, reference: dict[str, dict[str, float]], reference_notes: list[str] = ()) -> Table:
    """Rows: dataset × (variants + a random-weight reference); columns: transform × depth."""
    metrics = sorted({c for c in runs.columns if c.startswith("eq1_residual_")},
                     key=lambda c: (int(c.rsplit("_d", 1)[1]), ["rotation", "scale", "translation"].index(c.split("_")[2])))
    labels = {m: f"{m.split('_')[2]} d{m.rsplit('_d', 1)[1]}" for m in metrics}
    rows, index = [], []
    for dataset in datasets_in(runs):
        for row in row_order(runs["row"].unique()):
            chosen, basis = reported_runs(runs, dataset, row)
            if chosen.empty:
                continue
            rows.append({labels[m]: mean_sd(chosen[m], 1.0, 3) + ("" if basis == Basis.FINAL else " †") for m in metrics})
            index.append(f"{dataset} / {row}")
        if dataset not in reference:  # no random-weight reference for the deep datasets (not MNIST digits)
            continue
        ref = reference[dataset]
        rows.append({labels[m]: DASH if m not in ref else f"{ref[m]:.3f}" for m in metrics})
        index.append(f"{dataset} / random weights (reference)")
    shown = pd.DataFrame(rows, index=pd.Index(index, name="classifier"), columns=list(labels.values())).fillna(DASH)
    notes = ["Eq. 1 measured: mean‖T⁻¹Γ(Tf) − Γf‖² / mean‖Γf − Γf′‖² on each classifier's own depth-X feature maps "
             "(exact quarter turns, scales 2^±½ and 2^±1, stride-multiple shifts; canonical digits of the row's "
             "dataset). 0 = a spatial warp re-aligns the features: translations always do; rotations and scalings "
             "do not unless the learnt features are invariant to them — the paper's theorem, measured.",
             *reference_notes]
    return Table("eq1", "Eq. 1: best-case spatial re-alignment residual of the classifier's feature maps", shown,
                 None, notes)


@functools.lru_cache(maxsize=8)
def random_reference(sources: tuple[tuple[str, str | None], ...], digits: int = 256,
                     seed: int = 0) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Eq. 1 residuals of a random-weight CNN per (dataset, data_root) (cached): what training is compared with,
    on the digits the study's runs measured theirs on (their ``data_root``'s first test digits). Where this
    machine lacks those files, or the runs did not record their root, the embedded subset's, said in the notes."""
    import torch

    from trainables.data import DataError, load_data, load_embedded
    from trainables.datasets import MNIST
    from trainables.evaluate import eq1_residuals
    from trainables.models import STNClassifier

    out, notes = {}, []
    for dataset, root in sources:
        if dataset_spec(dataset).family != MNIST:  # the others' images are not MNIST digits
            continue
        try:
            splits = load_data(dataset, root, download=False) if root else load_embedded()
        except DataError:
            splits = load_embedded()
            notes.append(f"{dataset}: the random-weight reference uses the embedded subset's digits: the runs' "
                         f"data_root ({root}) is not on this machine")
        torch.manual_seed(seed)
        out[dataset] = eq1_residuals(STNClassifier(dataset, "CNN").eval(), splits.test_x[:digits])
    return out, notes

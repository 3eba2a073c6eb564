"""Every reported run on its own row, and the seeds whose ST did not learn, named.

A mean ± std over three seeds hides a seed whose localisation network never moved: −0.87 ± 0.05 and
−0.58 ± 0.50 can be the same two good seeds with and without a collapsed third. The report therefore
lists each run's test error, pose SD and slope, and names every seed whose ST did not learn by a rule
that fits the variant and the distortion (``verdict``).
"""

from __future__ import annotations

import pandas as pd

from study.report.data import COLUMN, datasets_in, pose_unit, reported_runs, row_order
from study.report.tables import DASH, Table
from study.tracking.contract import Basis
from trainables.datasets import dataset_spec
from trainables.evaluate import untouched_pose_sd
from trainables.registry import parse_variant

LEARNT_SLOPE = -0.5  # rotation: an ST that undoes at least half of each applied angle
LEARNT_POSE_FRACTION = 0.75  # translation / scale: the pose SD has fallen below 3/4 of an inactive ST's

LEARNT, NOT_LEARNT, NOT_EXPECTED, NO_ST = "yes", "NO", "not expected", DASH


def rule(dataset: str) -> str:
    """The rule ``verdict`` applies on ``dataset``, as the report states it."""
    if dataset_spec(dataset).has_slope:
        return (f"{COLUMN[dataset]}: an input-warping ST (C0, SLX, DLX) learnt when its test angle slope ≤ {LEARNT_SLOPE:g}; "
                f"STN-CX (X ≥ 1) warps a feature map and is not expected to rotate, so it is not flagged")
    return (f"{COLUMN[dataset]}: an ST learnt when its test pose SD < {LEARNT_POSE_FRACTION:g} × "
            f"{untouched_pose_sd(dataset):.2f} {pose_unit(dataset)} (the untouched value: the spread of the applied "
            f"transforms, what an ST that does nothing shows)")


def verdict(dataset: str, variant: str, run: pd.Series) -> str:
    """``yes`` / ``NO`` / ``not expected`` / a dash (no ST, or no pose metric on this dataset)."""
    pose = dataset_spec(dataset).pose
    spec = parse_variant(variant.split(" [")[0])
    if spec.depth is None or pose is None:
        return NO_ST
    if pose.has_slope:
        if not spec.warps_input:
            return NOT_EXPECTED
        slope = run.get("angle_slope")
        return DASH if pd.isna(slope) else (LEARNT if slope <= LEARNT_SLOPE else NOT_LEARNT)
    pose = run.get("pose_sd")
    return DASH if pd.isna(pose) else (LEARNT if pose < LEARNT_POSE_FRACTION * untouched_pose_sd(dataset) else NOT_LEARNT)


def per_run(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per reported run (a cell's final seeds, else its val-best search trial), table order."""
    rows = []
    for dataset in datasets_in(runs):
        for row in row_order(runs["row"].unique()):
            chosen, basis = reported_runs(runs, dataset, row)
            if chosen.empty:
                continue
            chosen = chosen.assign(_seed=pd.to_numeric(chosen.get("seed"), errors="coerce")).sort_values("_seed")
            for _, run in chosen.iterrows():
                rows.append({"dataset": dataset, "variant": row, "seed": run.get("seed", DASH), "basis": basis,
                             "test_error": run.get("test_error"), "pose_sd": run.get("pose_sd"),
                             "angle_slope": run.get("angle_slope"), "learnt": verdict(dataset, row, run)})
    return pd.DataFrame(rows)


def did_not_learn(runs: pd.DataFrame) -> str:
    """One line naming every reported seed whose ST did not learn (or saying none did not)."""
    frame = per_run(runs)
    if frame.empty or "learnt" not in frame:
        return "ST did not learn: no reported runs"
    failed = frame[frame["learnt"] == NOT_LEARNT]
    judged = int(frame["learnt"].isin([LEARNT, NOT_LEARNT]).sum())
    if failed.empty:
        return f"ST did not learn: none of the {judged} judged runs (every input-warping ST learnt by the rule below)"
    named = "; ".join(f"{r.dataset} {r.variant} seed {r.seed} ({_evidence(r)})" for r in failed.itertuples())
    return f"ST did not learn in {len(failed)} of {judged} judged runs: {named}"


def _evidence(run) -> str:
    if dataset_spec(run.dataset).has_slope:
        return f"slope {run.angle_slope:+.2f}"
    return f"pose SD {run.pose_sd:.2f} {pose_unit(run.dataset)}"


def _fmt(value, scale: float, digits: int) -> str:
    return DASH if value is None or pd.isna(value) else f"{scale * float(value):.{digits}f}"


def seeds_table(runs: pd.DataFrame) -> Table:
    frame = per_run(runs)
    shown = pd.DataFrame({
        "test error %": [_fmt(v, 100.0, 2) for v in frame.get("test_error", [])],
        "pose SD": [_fmt(v, 1.0, 2) for v in frame.get("pose_sd", [])],
        "angle slope": [_fmt(v, 1.0, 2) for v in frame.get("angle_slope", [])],
        "ST learnt": list(frame.get("learnt", [])),
    }, index=pd.Index([f"{r.dataset} / {r.variant} / seed {r.seed}" + ("" if r.basis == Basis.FINAL else " †")
                       for r in frame.itertuples()], name="run"))
    notes = [did_not_learn(runs), *(f"Rule, {rule(d)}" for d in datasets_in(runs, posed=True)),
             "Pose SD in each dataset's unit (° rotation, px translation, log2 area scale); † a val-best search trial "
             "(no final stage for that cell)."]
    return Table("seeds", "Every run: test error, pose SD, angle slope and whether its ST learnt", shown, None, notes)

"""What an applied transform's pose is: one object per kind, with its unit, its formulas and what it supports.

A dataset whose evaluation draws apply a transform names its pose kind (``DatasetSpec.pose_kind``); the
pose metrics (``metrics``), the evaluation (``evaluate.alignment``), the did-not-learn rule and the report's
columns and figures read the kind's object instead of testing its name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PoseKind:
    name: str
    formula: str  # which of ``metrics``' pose formulas: rotation, translation or scale
    unit: str
    period: float | None = None  # the pose is an angle on a circle of this period: final poses wrap into ±period/2
    has_slope: bool = False  # a scalar pose: the predicted-vs-applied slope (Fig. 3) and its figure are defined

    def wrap(self, values):
        """Values (a tensor or array) brought into [−period/2, period/2); unchanged without a period."""
        if self.period is None:
            return values
        half = self.period / 2
        return (values + half) % self.period - half


POSE_KINDS: dict[str, PoseKind] = {kind.name: kind for kind in (
    # ±90° (the paper's): the authors' formulas, no wrap — a final angle beyond ±180° is not folded back
    PoseKind("rotation", "rotation", "°", has_slope=True),
    # rotations over the full turn (±180°): the same formulas, and a final pose is an angle on the circle
    PoseKind("full-rotation", "rotation", "°", period=360.0, has_slope=True),
    PoseKind("translation", "translation", "px"),
    PoseKind("scale", "scale", "log2"),
)}


def pose_kind(name: str) -> PoseKind:
    if name not in POSE_KINDS:
        raise ValueError(f"unknown pose kind {name!r}: allowed {', '.join(POSE_KINDS)}")
    return POSE_KINDS[name]

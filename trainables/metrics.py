"""Errors and loss, pose alignment, the angle-plot regression, feature-map misalignment, Eq. 1 and the
plankton rotation consistency.

Pose conventions are pinned to the generators of ``distortions`` (the tests feed the oracle θ):
for an ST output θ the predicted pose p and the applied pose t add up to the final pose z = t + p,
which a perfectly canonicalising ST holds constant within each class.

- rotation:    t = applied angle (°, counter-clockwise);  p = -atan2(θ01 - θ10, θ00 + θ11)·180/π
- translation: t = applied shift (px, x right, y down);    p = -(θ02, θ12)·W/2
  (W/2 rather than the authors' (W-1)/2 because we sample with align_corners=False, and y keeps
  the image's downward sign on both sides)
- scale:       t = 2·log2 s (area, log2 units);          p = log2 det(θ⁻¹)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from trainables import st
from trainables.pose import pose_kind

ROTATIONS = 17  # plankton consistency: each test image turned by 17 angles evenly spaced over the circle


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; (N, P, C) logits with (N, P) labels give the sum of the P per-position means (authors' SVHN)."""
    if logits.ndim == 3:
        return F.cross_entropy(logits.transpose(1, 2), labels) * logits.shape[1]
    return F.cross_entropy(logits, labels)


def wrong(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """Misclassified images; with several positions an image is right only when all are (sequence accuracy)."""
    miss = logits.argmax(-1) != labels
    return int(miss.reshape(len(labels), -1).any(1).sum())


def applied_pose(kind: str, params: torch.Tensor) -> torch.Tensor:
    """The generator's transform params as the pose t of the pose-alignment measure (Finnveden et al.)."""
    if pose_kind(kind).formula == "scale":
        return 2.0 * torch.log2(params)
    return params


def predicted_pose(kind: str, theta: torch.Tensor, side: int) -> torch.Tensor:
    """The pose p that an ST's 2×3 θ applies, in the units of ``applied_pose``."""
    kind = pose_kind(kind).formula
    if kind == "rotation":
        return -torch.rad2deg(torch.atan2(theta[:, 0, 1] - theta[:, 1, 0], theta[:, 0, 0] + theta[:, 1, 1]))
    if kind == "translation":
        return -theta[:, :, 2] * side / 2.0
    if kind == "scale":
        return -torch.log2(torch.linalg.det(theta[:, :, :2]).abs())
    raise AssertionError(kind)


# The pose formulas of the code released with arXiv 2001.05858 v1 (luuf/stn-placement, stn/eval.py at 07a44d6):
# the paper's first version. The functions above follow their later, ICPR-era code (luuf/understanding-STNs),
# which the paper's final numbers use; the report gives both (docs/fidelity.md "Pose formulas").
V1_TRANSLATION_UNIT = 30.0  # pixels per unit of θ's shift, for every variant (the ICPR-era code: the warped map's)


def applied_pose_v1(kind: str, params: torch.Tensor) -> torch.Tensor:
    """The applied pose t of the v1 code: degrees, pixels (x, y), or log2 s on both axes for scale."""
    if pose_kind(kind).formula == "scale":
        return torch.log2(params).reshape(-1, 1).expand(-1, 2)
    return params


def predicted_pose_v1(kind: str, theta: torch.Tensor) -> torch.Tensor:
    """The v1 code's pose p of θ, read from θ⁻¹ (the transform the digit saw): the angle of θ⁻¹'s first row,
    θ's shift × 30 whatever the warped map, and the per-axis scale vector (the norm of θ⁻¹'s first row, and
    det θ⁻¹ over it) in log2. Equal to ``predicted_pose`` for a pure rotation and for an input warp's shift."""
    inverse = torch.linalg.inv(theta[:, :, :2].double())
    kind = pose_kind(kind).formula
    if kind == "rotation":
        return torch.rad2deg(torch.atan2(inverse[:, 0, 1], inverse[:, 0, 0])).to(theta.dtype)
    if kind == "translation":
        return -theta[:, :, 2] * V1_TRANSLATION_UNIT
    if kind == "scale":
        sx = inverse[:, 0].norm(dim=1)
        sy = torch.linalg.det(inverse).abs() / sx
        return torch.log2(torch.stack([sx, sy], dim=1)).to(theta.dtype)
    raise AssertionError(kind)


def theta_parts(theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split each 2×3 θ into rotation (°), log2 scale, shear and shift (normalised units), per sample.

    The 2×2 part A = S + N: S = [[a, −b], [b, a]] is the best-fitting similarity (angle atan2(b, a),
    the rotation pose's formula, scale √det) and N = [[c, d], [d, −c]] the rest — shear and
    anisotropic scaling, measured as |N| / |S|. It shows which of θ's six directions an affine ST
    moves in: a canonicalising ST spreads its angle over the inputs, a zooming one its scale.
    """
    a, b = (theta[:, 0, 0] + theta[:, 1, 1]) / 2, (theta[:, 1, 0] - theta[:, 0, 1]) / 2
    c, d = (theta[:, 0, 0] - theta[:, 1, 1]) / 2, (theta[:, 0, 1] + theta[:, 1, 0]) / 2
    det = torch.linalg.det(theta[:, :, :2]).abs().clamp_min(1e-12)
    return {"angle": torch.rad2deg(torch.atan2(b, a)), "log2_scale": 0.5 * torch.log2(det),
            "shear": torch.hypot(c, d) / torch.hypot(a, b).clamp_min(1e-12), "shift": theta[:, :, 2].norm(dim=1)}


def theta_spread(theta: torch.Tensor) -> dict[str, float]:
    """SD over inputs of each part of :func:`theta_parts` (shear: RMS): how input-dependent each one is."""
    parts = theta_parts(theta.double())
    return {"theta_angle_sd": float(parts["angle"].std(unbiased=False)),
            "theta_log2_scale_sd": float(parts["log2_scale"].std(unbiased=False)),
            "theta_shear_rms": float(parts["shear"].pow(2).mean().sqrt()),
            "theta_shift_sd": float(theta[:, :, 2].double().std(0, unbiased=False).norm())}


def pose_sd(final_pose, labels) -> float:
    """Pooled within-class SD: sqrt((1/N) Σ_c Σ_{i∈c} ‖z_i − mean_{j∈c} z_j‖²)."""
    z = np.asarray(final_pose, dtype=np.float64)
    z = z.reshape(len(z), -1)
    labels = np.asarray(labels)
    total = 0.0
    for c in np.unique(labels):
        zc = z[labels == c]
        total += float(((zc - zc.mean(axis=0)) ** 2).sum())
    return math.sqrt(total / len(z))


def deming(x, y) -> tuple[float, float]:
    """Orthogonal (Deming, δ = 1) regression y = m·x + c: the principal axis of the point cloud."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    cov = np.cov(np.stack([x, y]), bias=True)
    values, vectors = np.linalg.eigh(cov)
    vx, vy = vectors[:, np.argmax(values)]
    slope = math.inf if abs(vx) < 1e-12 else float(vy / vx)
    return slope, float(y.mean() - slope * x.mean()) if math.isfinite(slope) else math.nan


def misalignment(transformed: torch.Tensor, original: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """mean‖a(T f) − a(f)‖² / mean‖a(f) − a(f′)‖², f′ = another image of the batch; 0 = aligned."""
    other = original.roll(1, dims=0)
    if mask is not None:
        transformed, original, other = transformed * mask, original * mask, other * mask
    num = (transformed - original).pow(2).flatten(1).sum(1).mean()
    den = (original - other).pow(2).flatten(1).sum(1).mean()
    return float(num / den.clamp_min(1e-12))


# ---------------------------------------------------------------- Eq. 1, measured directly

QUARTER_TURNS = (90.0, 180.0, 270.0)  # exact on the pixel grid: any residual is Eq. 1's, not interpolation's
SCALES = (0.5, 2**-0.5, 2**0.5, 2.0)


def _central_mask(side: int, half_width: float, device) -> torch.Tensor:
    coords = (torch.arange(side, device=device) + 0.5) * 2.0 / side - 1.0
    inside = coords.abs() <= half_width
    return (inside[:, None] & inside[None, :]).float()


def _cycle(values, n: int, device) -> torch.Tensor:
    return torch.tensor([values[i % len(values)] for i in range(n)], device=device, dtype=torch.float32)


def eq1_residual(features, images: torch.Tensor, depth: int, kind: str, stride: int) -> float:
    """Best-case spatial re-alignment residual of Γ_depth under ``kind`` (Eq. 1).

    ``features(images, depth)`` is the classifier's depth-X map Γ; ``images`` are canonical-pose
    inputs. We warp the input with a known T_g, map Γ(T_g f) back with the same known T_g⁻¹ on the
    feature grid, and compare with Γ f. Translations are by multiples of the network's stride at
    that depth (so they are integer shifts of the feature map) and are compared away from borders.
    """
    n, device = images.shape[0], images.device
    with torch.no_grad():
        reference = features(images, depth)
        side = reference.shape[-1]
        if kind == "translation":
            steps = [(1, 0), (0, 1), (-1, 1), (1, -1), (-1, -1), (0, -1)]
            shift = torch.tensor([steps[i % len(steps)] for i in range(n)], device=device)
            pad = stride
            padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
            moved = torch.stack([padded[i].roll((int(s[1]) * stride, int(s[0]) * stride), dims=(-2, -1))
                                 for i, s in enumerate(shift)])
            ref_padded = features(padded, depth)
            back = torch.stack([m.roll((-int(s[1]), -int(s[0])), dims=(-2, -1))
                                for m, s in zip(features(moved, depth), shift, strict=True)])
            border = torch.zeros_like(ref_padded[:1, :1])
            border[..., 1:-1, 1:-1] = 1.0  # one feature pixel = one stride: the rolled-around seam
            return misalignment(back, ref_padded, border)
        if kind == "rotation":
            theta = st.rotation_matrix(_cycle(QUARTER_TURNS, n, device))
            mask = None
        elif kind == "scale":
            scales = _cycle(SCALES, n, device)
            theta = st.identity(n, device) / scales[:, None, None]  # content enlarged by s
            mask = _central_mask(side, 0.5, device)
        else:
            raise ValueError(f"unknown Eq. 1 transform {kind!r}: allowed rotation, scale, translation")
        transformed = features(st.warp(images, theta, None, "zeros"), depth)
        back = st.warp(transformed, st.invert(theta), side, "zeros")
        return misalignment(back, reference, mask)


EQ1_KINDS = ("rotation", "scale", "translation")


# ---------------------------------------------------------------- plankton rotation consistency


def rotation_angles(count: int = ROTATIONS) -> torch.Tensor:
    """``count`` angles (°) evenly spaced over the circle from −180 (authors: ``linspace(-180, 180, endpoint=False)``)."""
    return torch.arange(count, dtype=torch.float64) * (360.0 / count) - 180.0


def axis_distance(a, b) -> np.ndarray:
    """Angular distance mod 180° (orientations, so 0° and 180° coincide): in [0, 90]."""
    d = np.mod(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), 180.0)
    return np.minimum(d, 180.0 - d)


def rotation_consistency(final_angles) -> float:
    """Mean angular deviation mod 180° of each image's R final angles (N, R), as in the authors' code.

    The final angle of a rotated copy is z = applied + predicted (the pose convention above). Per image
    the reference is the copy whose summed distance to the others is least (their ``min_angle_dist``), and
    the sum is averaged over the R − 1 others; the result is the mean over images. A medoid, not the
    circular mean: an ST that does not rotate leaves the z evenly spread mod 180°, where the circular mean
    is undefined. 0 = every copy of an image ends at the same orientation (mod 180°); 90 at most.
    """
    z = np.asarray(final_angles, dtype=np.float64)
    sums = axis_distance(z[:, :, None], z[:, None, :]).sum(2)
    return float((sums.min(1) / (z.shape[1] - 1)).mean())

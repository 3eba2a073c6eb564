"""Validation and end-of-trial evaluation of a model: every metric of a trial in one place.

Validation and test draws are seeded independently of the trial's seed, so every trial of a study
sees the *same* distorted val and test sets: comparisons between trials are paired, and selecting
on ``val_error`` never touches the test draws. Datasets whose evaluation applies no known transform
(SVHN, PlanktonSet) get no pose or feature-misalignment metrics, and one test pass (it is fixed); the
spec's extra metrics stand in (an STN on PlanktonSet: the rotation consistency of its final angles). A multi-digit image
counts as right only when every position is (sequence accuracy).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from trainables import metrics, st
from trainables.architectures import stride_after_blocks
from trainables.data import DistortedStream, MnistSplits, generator, stream_seed
from trainables.datasets import dataset_spec
from trainables.models import STNClassifier
from trainables.pose import pose_kind
from trainables.train_config import TRAIN_DEFAULTS

EVAL_SEED = 0  # val/test draws: shared by every trial, independent of the trial seed
TEST_PASSES = TRAIN_DEFAULTS["test_passes"]
MISALIGNMENT_DIGITS = 500
EQ1_DIGITS = 256  # the residual is a ratio of means: 256 digits pin it to a few per cent


def alignment(kind: str, applied: torch.Tensor, theta: torch.Tensor, labels: torch.Tensor, side: int,
              suffix: str = "") -> dict[str, float]:
    """Pose SD (and, for rotations, the Deming slope/intercept) of one set of ST outputs θ; for the first ST
    (no suffix) also ``pose_sd_v1``, the same measure by the formulas of 2001.05858 v1's code."""
    pose = pose_kind(kind)
    t = metrics.applied_pose(kind, applied).cpu().numpy()
    p = metrics.predicted_pose(kind, theta, side).cpu().numpy()
    out = {f"pose_sd{suffix}": metrics.pose_sd(pose.wrap(t + p), labels.cpu().numpy())}
    if not suffix:  # the first ST's pose SD by the formulas of 2001.05858 v1's code too (docs/fidelity.md)
        z = metrics.applied_pose_v1(kind, applied) + metrics.predicted_pose_v1(kind, theta)
        out["pose_sd_v1"] = metrics.pose_sd(pose.wrap(z.cpu().numpy()), labels.cpu().numpy())
    if pose.has_slope:  # on a circle, the predicted angle is read as the one nearest the undoing angle −t
        p = -t + pose.wrap(t + p)
        out[f"angle_slope{suffix}"], out[f"angle_intercept{suffix}"] = metrics.deming(t, p)
    return out


@functools.lru_cache(maxsize=16)
def untouched_pose_sd(dataset: str, draws: int = 20_000) -> float:
    """The pose SD of an ST that does nothing (θ = identity, predicted pose 0): the spread of the applied
    transforms alone, from the evaluation draws' own distribution, in the dataset's pose unit."""
    spec = dataset_spec(dataset)
    if not spec.pose_kind:
        raise ValueError(f"dataset {dataset} has no pose: no untouched pose SD")
    distortion = spec.eval_distortion()
    params = distortion.sample(draws, generator(stream_seed(EVAL_SEED, "untouched"), "cpu"), "cpu")
    return metrics.pose_sd(metrics.applied_pose(spec.pose_kind, params).cpu().numpy(), [0] * draws)


def validate(model: STNClassifier, splits: MnistSplits, batch_size: int = 500) -> dict[str, float]:
    """Per-epoch validation: ``val_error``, and for an STN ``val_pose_sd`` / ``val_angle_slope`` (first ST)
    and the spread of θ's parts over the val set (``val_theta_*``, ``metrics.theta_spread``).

    One forward pass over the (fixed) distorted val set gives all three, so an epoch's telemetry
    shows whether and when the ST starts to undo the distortion at no extra pass.
    """
    spec = dataset_spec(model.dataset)
    distortion = spec.eval_distortion()
    stream = _stream(splits.val_x, splits.val_y, distortion, batch_size, splits)
    was_training = model.training
    model.eval()
    wrong, applied, thetas, labels = 0, [], [], []
    alive = _HeadActivity(model)
    try:
        with torch.no_grad(), alive:
            for images, y, params in stream.batches(stream_seed(EVAL_SEED, "val")):
                details = model.forward_details(images)
                wrong += metrics.wrong(details.logits, y)
                if model.spec.has_st and spec.pose_kind:
                    applied.append(params)
                    thetas.append(details.thetas[0])
                    labels.append(y)
    finally:
        model.train(was_training)
    out = {"val_error": wrong / max(len(splits.val_y), 1)}
    if applied:
        pose = alignment(spec.pose_kind, torch.cat(applied), torch.cat(thetas), torch.cat(labels), model.warped_extent)
        out["val_pose_sd"] = pose["pose_sd"]
        if "angle_slope" in pose:
            out["val_angle_slope"] = pose["angle_slope"]
        if model.st_transform != "translation":  # which directions θ moves in (rotation, scale, shear, shift)
            out.update({f"val_{k}": v for k, v in metrics.theta_spread(torch.cat(thetas)).items()})
    if alive.units is not None:
        out["val_loc_alive"] = alive.fraction()
    return out


class _HeadActivity:
    """Which of the localisation head's last units fire for at least one val image (first ST).

    θ's parameter layer is zero-initialised and reads only these units: when every one of them is
    dead (a ReLU at 0 for every input), θ is the same for every image and gets no gradient that could
    make it depend on the input again — the "constant output" collapse, visible here from epoch 1.
    """

    def __init__(self, model: STNClassifier):
        self.model, self.units, self.handle = model, None, None

    def _hook(self, _module, _inputs, output):
        fired = (output.flatten(1) > 0).any(0)
        self.units = fired if self.units is None else self.units | fired

    def __enter__(self):
        if self.model.localisation is not None:
            self.handle = self.model.localisation.head.register_forward_hook(self._hook)
        return self

    def __exit__(self, *_exc):
        if self.handle is not None:
            self.handle.remove()

    def fraction(self) -> float:
        return float(self.units.float().mean())


def _stream(images, labels, distortion, batch_size: int, splits: MnistSplits) -> DistortedStream:
    """A fixed evaluation stream; the clutter pool (a float copy of train) only where the generator uses one."""
    return DistortedStream(images, labels, distortion, batch_size, splits.train_x if distortion.needs_pool else None)


def _canonical_digits(model: STNClassifier, digits: torch.Tensor) -> tuple[torch.Tensor, object]:
    distortion = dataset_spec(model.dataset).eval_distortion()
    clean = digits.float() / 255.0
    return distortion.render(clean, distortion.canonical(len(clean), clean.device)), distortion


def feature_misalignment(model: STNClassifier, digits: torch.Tensor, seed: int = EVAL_SEED) -> float:
    """Residual of the post-ST depth-X map of T_g f against that of f (clutter-free renders)."""
    original, distortion = _canonical_digits(model, digits)
    params = distortion.sample(len(digits), generator(stream_seed(seed, "misalignment"), digits.device), digits.device)
    transformed = distortion.render(digits.float() / 255.0, params)
    with torch.no_grad():
        a_t = model.forward_details(transformed).aligned_features
        a_0 = model.forward_details(original).aligned_features
    return metrics.misalignment(a_t, a_0)


def eq1_residuals(model: STNClassifier, digits: torch.Tensor) -> dict[str, float]:
    """``eq1_residual_<kind>_d<X>`` of the model's own classifier at every depth X ≥ 1 (the studied ones of a deep net)."""
    images, _ = _canonical_digits(model, digits)
    out = {}
    for depth in model.arch.studied_depths or range(1, len(model.arch.classifier_blocks) + 1):
        for kind in metrics.EQ1_KINDS:
            out[f"eq1_residual_{kind}_d{depth}"] = metrics.eq1_residual(
                model.classifier_features, images, depth, kind, stride_after_blocks(model.arch, depth))
    return out


def final_angles(model: STNClassifier, images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """(N, R) final angles z = applied + predicted of the *composed* θ, ``images`` in [0, 1] turned by each angle."""
    out = []
    with torch.no_grad():
        for angle in angles.tolist():
            applied = torch.full((len(images),), angle, device=images.device)
            turned = st.warp(images, st.rotation_matrix(applied), None, "zeros")  # 0 = background outside
            theta = model.transform(turned)  # the composed θ: what an iterated ST applies
            out.append(applied + metrics.predicted_pose("rotation", theta, images.shape[-1]))
    return torch.stack(out, 1)


def rotation_consistency(model: STNClassifier, images: torch.Tensor, batch_size: int = 500) -> float:
    """``rotation_consistency_deg`` (paper notes §6): mean deviation mod 180° of 17 rotated copies' final angles."""
    angles = metrics.rotation_angles()
    finals = [final_angles(model, images[start:start + batch_size].float() / 255.0, angles).cpu()
              for start in range(0, len(images), batch_size)]
    return metrics.rotation_consistency(torch.cat(finals).numpy())


# What a spec's ``extra_metrics`` can name: an STN's end-of-trial metric on the test images (uint8), by name.
EXTRA_METRICS = {"rotation_consistency_deg": rotation_consistency}


def evaluate(model: STNClassifier, splits: MnistSplits, passes: int = TEST_PASSES, batch_size: int = 500):
    """End-of-trial metrics (fractions, not percent) and the raw data the figures need."""
    model.eval()
    spec = dataset_spec(model.dataset)
    distortion = spec.eval_distortion()
    stream = _stream(splits.test_x, splits.test_y, distortion, batch_size, splits)
    errors, applied, first, composed, labels = [], [], [], [], []
    pose = model.spec.has_st and bool(spec.pose_kind)
    with torch.no_grad():
        for k in range(passes if distortion.stochastic else 1):
            wrong = 0
            for images, y, params in stream.batches(stream_seed(EVAL_SEED, "test", k)):
                details = model.forward_details(images)
                wrong += metrics.wrong(details.logits, y)
                if pose:
                    applied.append(params)
                    first.append(details.thetas[0])
                    composed.append(details.theta)
                    labels.append(y)
            errors.append(wrong / len(splits.test_y))
    result = {"test_error": float(np.mean(errors)), "test_error_sd": float(np.std(errors))}
    figures: dict[str, np.ndarray] = {}
    if pose:
        kind, t, y = spec.pose_kind, torch.cat(applied), torch.cat(labels)
        result.update(alignment(kind, t, torch.cat(first), y, model.warped_extent))  # the paper's: the first ST
        if model.spec.iterations > 1:  # what the iterated model actually applies: named apart
            result.update(alignment(kind, t, torch.cat(composed), y, model.warped_extent, suffix="_composed"))
        if spec.has_slope:
            figures["angle_applied"] = metrics.applied_pose(kind, t).cpu().numpy()
            figures["angle_predicted"] = metrics.predicted_pose(kind, torch.cat(first), model.warped_extent).cpu().numpy()
        sample = splits.test_x[:MISALIGNMENT_DIGITS]
        result["feature_misalignment"] = feature_misalignment(model, sample)
    for name in spec.extra_metrics if model.spec.has_st else ():
        result[name] = EXTRA_METRICS[name](model, splits.test_x, batch_size)
    result.update(eq1_residuals(model, splits.test_x[:EQ1_DIGITS]))
    figures.update(example_grid(model, splits.test_x[:8]))
    return result, figures


def example_grid(model: STNClassifier, digits: torch.Tensor, transforms: int = 4) -> dict[str, np.ndarray]:
    """Fig. 2 data: the same digits under several transforms, and the ST's output for each.

    The transforms are the training stream's (the plankton augmentation, not the unchanged test
    images); colour images are shown as their channel mean.
    """
    distortion = dataset_spec(model.dataset).train_distortion()
    gen = generator(stream_seed(EVAL_SEED, "examples"), digits.device)
    clean = digits.float() / 255.0
    inputs, outputs = [], []

    def grey(images: torch.Tensor) -> torch.Tensor:
        return images.mean(1).cpu() if images.shape[1] > 1 else images[:, 0].cpu()

    with torch.no_grad():
        for _ in range(transforms if distortion.stochastic else 1):
            params = distortion.sample(len(clean), gen, clean.device)
            images = distortion.render(clean, params)
            inputs.append(grey(images))
            if model.spec.has_st:
                outputs.append(grey(model.forward_details(images).st_output))
    grid = {"example_inputs": torch.stack(inputs, 1).numpy()}
    if outputs:
        grid["example_st_outputs"] = torch.stack(outputs, 1).numpy()
    return grid

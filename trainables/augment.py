"""Batched, on-device augmentation of the deeper datasets, shaped like the MNIST distortion generators.

The loop and the evaluation draw every batch through a ``Distortion`` (which one: the dataset's spec,
``datasets.DatasetSpec.train_distortion`` / ``eval_distortion``); for the deeper datasets:

- ``Unchanged``: the images as stored (SVHN train and test; PlanktonSet val and test). No transform
  is applied, so there is no pose to measure: ``pose_kind`` is "" and the pose metrics are skipped.
- ``PlanktonAugment``: the authors' PlanktonSet training augmentation — rotation U(±180°), shear
  U(±20°), scale log-uniform in [1/1.3, 1.3], horizontal flip with p = 1/2, shift U(±10 px) — as one
  affine warp per image (one ``grid_sample`` per batch, no per-sample Python), 0 = background outside.
"""

from __future__ import annotations

import math

import torch

from trainables import st
from trainables.distortions import Distortion


class Unchanged(Distortion):
    """Identity: ``params`` are zeros, one pass over a split is all there is to see."""

    pose_kind, needs_pool, stochastic = "", False, False

    def __init__(self, side: int):
        self.side = side

    def sample(self, batch, gen, device):
        return torch.zeros(batch, device=device)

    def render(self, images, params, gen=None, pool=None):
        return images

    def canonical(self, batch, device):
        return torch.zeros(batch, device=device)

    def oracle_theta(self, params):
        return st.identity(params.shape[0], params.device, params.dtype)


def _uniform(shape, low: float, high: float, gen, device) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=device) * (high - low) + low


class PlanktonAugment(Distortion):
    """``params`` (B, 6): angle (°, counter-clockwise), shear (°, along x), scale, flip (0/1), dx, dy (px).

    The content is flipped, scaled, sheared, rotated, then shifted (right / down), all about the centre.
    """

    pose_kind, needs_pool = "", False

    def __init__(self, side: int, max_degrees: float = 180.0, max_shear: float = 20.0, max_scale: float = 1.3,
                 max_shift: float = 10.0):
        self.side = side
        self.max_degrees, self.max_shear, self.max_scale, self.max_shift = max_degrees, max_shear, max_scale, max_shift

    def sample(self, batch, gen, device):
        angle = _uniform((batch,), -self.max_degrees, self.max_degrees, gen, device)
        shear = _uniform((batch,), -self.max_shear, self.max_shear, gen, device)
        log_scale = math.log(self.max_scale)
        scale = torch.exp(_uniform((batch,), -log_scale, log_scale, gen, device))
        flip = (torch.rand((batch,), generator=gen, device=device) < 0.5).float()
        shift = _uniform((batch, 2), -self.max_shift, self.max_shift, gen, device)
        return torch.cat([torch.stack([angle, shear, scale, flip], 1), shift], 1)

    def canonical(self, batch, device):
        return torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0], device=device).expand(batch, 6).clone()

    def theta(self, params: torch.Tensor) -> torch.Tensor:
        """The sampling θ (output -> input coordinates): the inverse of the content transform, composed."""
        angle, shear, scale, flip, dx, dy = params.unbind(1)
        batch, one, zero = params.shape[0], torch.ones_like(scale), torch.zeros_like(scale)

        def matrix(*rows):
            return st.to_homogeneous(torch.stack(rows, 1).view(batch, 2, 3))

        unflip = matrix(1 - 2 * flip, zero, zero, zero, one, zero)
        unscale = matrix(1 / scale, zero, zero, zero, 1 / scale, zero)
        unshear = matrix(one, -torch.tan(torch.deg2rad(shear)), zero, zero, one, zero)
        unrotate = st.to_homogeneous(st.rotation_matrix(angle))
        unshift = matrix(one, zero, -dx * 2 / self.side, zero, one, -dy * 2 / self.side)
        return (unflip @ unscale @ unshear @ unrotate @ unshift)[:, :2, :]

    def render(self, images, params, gen=None, pool=None):
        return st.warp(images, self.theta(params.to(images.dtype)), self.side, padding_mode="zeros")

    def oracle_theta(self, params):
        return st.invert(self.theta(params))

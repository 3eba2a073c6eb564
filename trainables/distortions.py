"""Batched, on-device generators of rotated, translated-cluttered and scaled-cluttered MNIST.

Each generator turns a batch of clean 28×28 digits (float in [0, 1], on the training device) into
distorted images with tensor ops only — no per-sample Python loop, no PIL — and returns the applied
transform with them, so metrics can compare the ST's prediction with the truth:

- rotated:    ``params`` = angle in degrees, content turned counter-clockwise (torchvision's sign);
- translated: ``params`` = (dx, dy) integer pixels, digit moved right / down from the canvas centre;
- scaled:     ``params`` = scale factor s (the digit's side is 28·s pixels), centred.

The ST θ that undoes each one is ``oracle_theta`` (tests pin the pose formulas of ``metrics`` to it).
Which dataset draws which generator, on which canvas, is its spec's (``datasets.make_distortion``).
"""

from __future__ import annotations

import functools

import torch

from trainables import st

CLUTTER_PATCHES = 6
CLUTTER_SIDE = 6
CLUTTER_MAX_HALF = 9  # scaled clutter: a crop is resized to 2s × 2s, s uniform in 1..9 (authors' MNIST_noise)


def _paste(canvas: torch.Tensor, tiles: torch.Tensor, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Add tiles (B, n, T, T) into canvas (B, S, S) with top-left corners (B, n); returns the canvas."""
    batch, side = canvas.shape[0], canvas.shape[-1]
    span = torch.arange(tiles.shape[-1], device=canvas.device)
    rows = (top[..., None] + span)[..., :, None]
    cols = (left[..., None] + span)[..., None, :]
    index = (rows * side + cols).reshape(batch, -1)
    canvas.view(batch, -1).scatter_add_(1, index, tiles.reshape(batch, -1))
    return canvas


def _uniform(shape, low, high, gen, device) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=device) * (high - low) + low


def _randint(high: int, shape, gen, device) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=gen, device=device)


def _bilinear_rows(coords: torch.Tensor, in_side: int) -> torch.Tensor:
    """(B, out, in) matrices that sample a 1-D signal of ``in_side`` pixels at pixel ``coords`` (B, out).

    Row i holds grid_sample's bilinear weights (align_corners=False, zeros padding: taps outside the
    signal are dropped), so a separable warp — a centred scaling, a scaled crop — is two batched
    matmuls instead of a 2-D gather. Built with two scatters (one per tap) into two spare columns.
    """
    low = torch.floor(coords)
    frac = coords - low
    low = low.long()
    rows = torch.zeros(*coords.shape, in_side + 2, device=coords.device, dtype=coords.dtype)
    rows.scatter_(-1, (low + 1).clamp(0, in_side + 1)[..., None], (1 - frac)[..., None])
    rows.scatter_add_(-1, (low + 2).clamp(0, in_side + 1)[..., None], frac[..., None])
    return rows[..., 1:in_side + 1]


@functools.lru_cache(maxsize=64)
def _clutter_resize(out_side: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The (out_side, 6) matrix that resizes a 6-pixel clutter crop as ``F.interpolate(mode="bilinear")``
    does (align_corners=False, source coordinates clamped to the crop)."""
    out = torch.arange(out_side, device=device, dtype=dtype)
    coords = ((out + 0.5) * CLUTTER_SIDE / out_side - 0.5).clamp(0, CLUTTER_SIDE - 1)
    return _bilinear_rows(coords[None], CLUTTER_SIDE)[0]


def _rotation_grid(degrees: torch.Tensor, side: int) -> torch.Tensor:
    """``affine_grid`` of ``st.rotation_matrix(degrees)`` on a side² canvas, as elementwise products.

    affine_grid multiplies a (B, side², 3) base grid by θ in a batched matmul whose 3×2 inner sizes
    run far below the CPU's speed: two thirds of rotated generation's time. Output pixel centres
    (align_corners=False) turned by θ directly are the same grid up to float rounding (tested).
    """
    rad = torch.deg2rad(degrees)[:, None, None, None]
    centres = (2 * torch.arange(side, device=degrees.device, dtype=degrees.dtype) + 1) / side - 1
    x, y = torch.broadcast_tensors(centres[None, :], centres[:, None])
    # (x, y) · cos + (−y, x) · sin = (cos x − sin y, sin x + cos y), the (B, side, side, 2) grid in one pass
    return torch.cos(rad) * torch.stack((x, y), -1) + torch.sin(rad) * torch.stack((-y, x), -1)


class Distortion:
    """Base: ``side`` of the output canvas (the dataset spec's, given at construction), ``pose_kind``:
    what ``params`` measure ("" = no pose metrics).

    ``needs_pool``: render takes clutter from a pool of training digits; ``stochastic``: every pass
    draws fresh transforms (False: one test pass says all, see ``augment.Unchanged``).
    """

    side: int
    pose_kind = ""
    needs_pool = True
    stochastic = True

    def __call__(self, digits: torch.Tensor, gen: torch.Generator, pool: torch.Tensor | None = None):
        """Draw fresh transforms from ``gen`` and render them: (images (B, 1, S, S), params)."""
        params = self.sample(digits.shape[0], gen, digits.device)
        return self.render(digits, params, gen, pool), params

    def sample(self, batch: int, gen: torch.Generator, device) -> torch.Tensor:
        raise NotImplementedError

    def render(self, digits, params, gen=None, pool=None) -> torch.Tensor:
        """Images for given transform params; clutter only when both ``gen`` and ``pool`` are given."""
        raise NotImplementedError

    def canonical(self, batch: int, device) -> torch.Tensor:
        """Params of the untransformed pose (angle 0, shift 0, scale 1)."""
        raise NotImplementedError

    def oracle_theta(self, params: torch.Tensor) -> torch.Tensor:
        """The ST θ that maps a distorted image back onto the clean digit's frame."""
        raise NotImplementedError


class Rotated(Distortion):
    def __init__(self, side: int, max_degrees: float = 90.0):
        self.side, self.max_degrees = side, max_degrees
        # beyond ±90° a final angle can pass ±180°: its pose is then read on the circle (``pose.POSE_KINDS``)
        self.pose_kind = "rotation" if max_degrees <= 90 else "full-rotation"

    def sample(self, batch, gen, device):
        return _uniform((batch,), -self.max_degrees, self.max_degrees, gen, device)

    def render(self, digits, angles, gen=None, pool=None):
        grid = _rotation_grid(angles.to(digits.dtype), self.side)
        return torch.nn.functional.grid_sample(digits[:, None], grid, mode="bilinear", padding_mode="zeros",
                                               align_corners=False)

    def canonical(self, batch, device):
        return torch.zeros(batch, device=device)

    def oracle_theta(self, params):
        return st.rotation_matrix(-params)


class Translated(Distortion):
    pose_kind = "translation"

    def __init__(self, side: int, max_shift: int = 16, clutter: int = CLUTTER_PATCHES):
        self.side, self.max_shift, self.clutter = side, max_shift, clutter

    def sample(self, batch, gen, device):
        return (_randint(2 * self.max_shift + 1, (batch, 2), gen, device) - self.max_shift).float()

    def canonical(self, batch, device):
        return torch.zeros(batch, 2, device=device)

    def render(self, digits, params, gen=None, pool=None):
        batch, device = digits.shape[0], digits.device
        shifts = params.round().long()
        canvas = torch.zeros(batch, self.side, self.side, device=device, dtype=digits.dtype)
        origin = (self.side - 28) // 2
        _paste(canvas, digits[:, None], origin + shifts[:, 1:2], origin + shifts[:, 0:1])
        if self.clutter and pool is not None and gen is not None:
            n = batch * self.clutter
            source = pool[_randint(pool.shape[0], (n,), gen, device)].to(digits.dtype)
            crop_top, crop_left = (_randint(28 - CLUTTER_SIDE + 1, (2, n), gen, device))
            span = torch.arange(CLUTTER_SIDE, device=device)
            rows = (crop_top[:, None] + span)[:, :, None]
            cols = (crop_left[:, None] + span)[:, None, :]
            patches = source[torch.arange(n, device=device)[:, None, None], rows, cols]
            where = _randint(self.side - CLUTTER_SIDE, (2, batch, self.clutter), gen, device)  # authors: [0, 54)
            _paste(canvas, patches.view(batch, self.clutter, CLUTTER_SIDE, CLUTTER_SIDE), where[0], where[1])
        return canvas.clamp_(max=1.0)[:, None]

    def oracle_theta(self, params):
        theta = st.identity(params.shape[0], params.device, params.dtype)
        theta[:, :, 2] = params * 2.0 / self.side
        return theta


class Scaled(Distortion):
    pose_kind = "scale"

    def __init__(self, side: int, low_exp: float = -1.0, high_exp: float = 2.0, clutter: int = CLUTTER_PATCHES):
        self.side, self.low_exp, self.high_exp, self.clutter = side, low_exp, high_exp, clutter

    def sample(self, batch, gen, device):
        return torch.pow(2.0, _uniform((batch,), self.low_exp, self.high_exp, gen, device))

    def canonical(self, batch, device):
        return torch.ones(batch, device=device)

    def render(self, digits, scales, gen=None, pool=None):
        device = digits.device
        scales = scales.to(digits.dtype)
        # canvas(q) = digit(q · (side/28) / s) in normalised coordinates: the digit, centred, 28·s px.
        # Bilinear sampling of a pure scaling is separable: two batched matmuls give grid_sample's
        # numbers (zeros padding, align_corners=False) at a fraction of the cost.
        y_out = (2 * torch.arange(self.side, device=device, dtype=scales.dtype) + 1) / self.side - 1
        coords = ((y_out[None, :] * (self.side / 28.0 / scales)[:, None] + 1) * 28 - 1) / 2
        canvas = self._centred_products(coords, digits)
        if self.clutter and pool is not None and gen is not None:
            self._add_clutter(canvas, pool, gen)
        return canvas.clamp_(max=1.0)[:, None]

    def _centred_products(self, coords: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
        """``R @ digits @ Rᵀ`` with R = ``_bilinear_rows(coords)``, computed only on the centred window the
        digit can reach (R's rows are built only there too).

        A digit of scale s covers ~28·s of the canvas' ``side`` pixels and every row outside it is zero,
        so the images are grouped by the window (a quarter, half, three quarters or all of the side) that
        holds their nonzero rows: with log2 s uniform, that is ~2.8× fewer multiply-adds than the whole
        canvas, and the same numbers (tests/test_distortions.py compares with ``grid_sample``).
        """
        batch, side = coords.shape[0], self.side
        # rows per image with a tap on the digit (centred): a coordinate in (-1, 28), as _bilinear_rows drops
        # taps outside 0..27
        reach = ((coords > -1) & (coords < 28)).sum(-1)
        canvas = digits.new_zeros(batch, side, side)
        placed = torch.zeros(batch, dtype=torch.bool, device=digits.device)
        for window in (side // 4, side // 2, 3 * side // 4, side):
            window += (side - window) % 2  # centred: the same margin on both sides
            chosen = ((reach <= window) & ~placed).nonzero().squeeze(1)
            if chosen.numel():
                lo = (side - window) // 2
                rows = _bilinear_rows(coords[chosen, lo:lo + window], 28)
                canvas[chosen, lo:lo + window, lo:lo + window] = rows @ digits[chosen] @ rows.transpose(1, 2)
                placed[chosen] = True
        return canvas

    def _add_clutter(self, canvas, pool, gen):
        """The authors' scaled clutter: 6 crops of 6×6 from random training digits, each resized to
        2s × 2s with s a uniform integer in 1..9 *independent of the digit's scale*, centred at a
        uniform integer position in [2, side − 2), s shrunk so the patch stays on the canvas.

        Each crop is resized as ``F.interpolate(mode="bilinear")`` does (coordinates clamped to the
        crop): ``R @ crop @ Rᵀ`` with R the (2s × 6) resampling matrix of its size. There are at most
        nine sizes, so the crops are grouped by size: each group is two plain matrix products with
        one R, and pastes exactly its 2s × 2s patches (padding every patch to 18 × 18 and building
        an R per crop cost more than the digit itself).
        """
        batch, side, device, dtype = canvas.shape[0], canvas.shape[-1], canvas.device, canvas.dtype
        n = batch * self.clutter
        pick = _randint(pool.shape[0], (n,), gen, device)
        crop = _randint(28 - CLUTTER_SIDE + 1, (n, 2), gen, device)  # (top, left) of the 6×6 crop
        span = torch.arange(CLUTTER_SIDE, device=device)
        flat = pick[:, None, None] * 784 + (crop[:, 0:1] + span)[:, :, None] * 28 + (crop[:, 1:2] + span)[:, None, :]
        crops = torch.take(pool, flat).to(dtype)
        centre = _randint(side - 4, (n, 2), gen, device) + 2  # (row, col) in [2, side - 2)
        half = _randint(CLUTTER_MAX_HALF, (n,), gen, device) + 1
        half = torch.minimum(half, torch.minimum(side - centre.amax(1), centre.amin(1)))
        # each patch's top-left cell in the flattened batch of canvases
        origin = (torch.arange(n, device=device) // self.clutter * side + centre[:, 0] - half) * side + centre[:, 1] - half
        flat_canvas = canvas.view(-1)
        for size in half.unique().tolist():
            chosen = (half == size).nonzero().squeeze(1)
            rows = _clutter_resize(2 * size, dtype, device)  # (2s, 6)
            patches = rows @ (crops[chosen] @ rows.T)  # (g, 2s, 2s)
            cells = torch.arange(2 * size, device=device)
            offsets = (cells[:, None] * side + cells[None, :]).view(-1)
            index = (origin[chosen, None] + offsets).view(-1)
            flat_canvas.scatter_add_(0, index, patches.reshape(-1))

    def oracle_theta(self, params):
        return st.identity(params.shape[0], params.device, params.dtype) * params[:, None, None]

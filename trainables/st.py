"""The spatial transformer: parameterisations, matrix composition and bilinear warping.

Convention (PyTorch's ``affine_grid``, ``align_corners=False``): θ maps *output* coordinates to the
*input* coordinates that are sampled, in normalised units where the image spans [-1, 1] with x to
the right and y down. So ``warp(x, θ)(u) = x(θ u)``, composing ``warp(warp(x, A), B) = warp(x, A·B)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Localisation outputs that make each parameterisation the identity (the zero-init layer's bias).
IDENTITY_PARAMS: dict[str, tuple[float, ...]] = {
    "affine": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "similarity": (1.0, 0.0, 0.0, 0.0),  # a, b, tx, ty -> [[a, -b, tx], [b, a, ty]]
    "rotation": (0.0,),  # angle in radians -> [[cos, -sin, 0], [sin, cos, 0]]
    "translation": (0.0, 0.0),  # tx, ty -> [[1, 0, tx], [0, 1, ty]]
}


def params_to_matrix(st_transform: str, params: torch.Tensor) -> torch.Tensor:
    """Map a batch of localisation outputs (B, k) to 2×3 affine matrices (B, 2, 3)."""
    batch = params.shape[0]
    if st_transform == "affine":
        return params.view(batch, 2, 3)
    zero, one = torch.zeros_like(params[:, 0]), torch.ones_like(params[:, 0])
    if st_transform == "similarity":
        a, b, tx, ty = params.unbind(1)
        rows = [a, -b, tx, b, a, ty]
    elif st_transform == "rotation":
        cos, sin = torch.cos(params[:, 0]), torch.sin(params[:, 0])
        rows = [cos, -sin, zero, sin, cos, zero]
    elif st_transform == "translation":
        rows = [one, zero, params[:, 0], zero, one, params[:, 1]]
    else:
        raise ValueError(f"unknown st_transform {st_transform!r}: allowed {', '.join(IDENTITY_PARAMS)}")
    return torch.stack(rows, dim=1).view(batch, 2, 3)


def to_homogeneous(theta: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) -> (B, 3, 3) with the row [0, 0, 1] appended."""
    last = torch.zeros_like(theta[:, :1, :])
    last[:, 0, 2] = 1.0
    return torch.cat([theta, last], dim=1)


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The single θ equal to warping with ``first`` and then warping that result with ``second``."""
    return (to_homogeneous(first) @ to_homogeneous(second))[:, :2, :]


def invert(theta: torch.Tensor) -> torch.Tensor:
    return torch.linalg.inv(to_homogeneous(theta))[:, :2, :]


def identity(batch: int, device=None, dtype=torch.float32) -> torch.Tensor:
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device, dtype=dtype)
    return eye.expand(batch, 2, 3).clone()


def rotation_matrix(degrees: torch.Tensor) -> torch.Tensor:
    """θ whose warp turns image content counter-clockwise by ``degrees`` (torchvision's rotate)."""
    rad = torch.deg2rad(degrees)
    return params_to_matrix("rotation", rad.unsqueeze(1))


def warp(x: torch.Tensor, theta: torch.Tensor, out_side: int | None = None, padding_mode: str = "border") -> torch.Tensor:
    """Bilinearly resample ``x`` (B, C, H, W) at ``θ u`` on an ``out_side``² grid."""
    side = out_side or x.shape[-1]
    grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], x.shape[1], side, side], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)

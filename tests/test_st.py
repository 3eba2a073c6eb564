"""The ST module against mathematics: identity, torchvision's rotation, composition, parameterisations."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from trainables import st
from trainables.registry import ST_TRANSFORMS


def blob(side=28):
    """A smooth, asymmetric synthetic image (so rotations and flips are distinguishable)."""
    c = (torch.arange(side) + 0.5) / side * 2 - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    img = torch.exp(-((x - 0.3) ** 2 + (y + 0.1) ** 2) / 0.05) + 0.6 * torch.exp(-((x + 0.2) ** 2 + (y - 0.35) ** 2) / 0.02)
    return img[None, None]


@pytest.mark.parametrize("st_transform", list(ST_TRANSFORMS))
def test_identity_params_give_the_identity_matrix(st_transform):
    params = torch.tensor([st.IDENTITY_PARAMS[st_transform]])
    assert torch.equal(st.params_to_matrix(st_transform, params), st.identity(1))


def test_restricted_parameterisations_map_to_the_expected_matrix():
    a = math.pi / 6
    rot = st.params_to_matrix("rotation", torch.tensor([[a]]))
    assert torch.allclose(rot, torch.tensor([[[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0]]]))
    sim = st.params_to_matrix("similarity", torch.tensor([[2.0, 0.5, 0.1, -0.2]]))
    assert torch.allclose(sim, torch.tensor([[[2.0, -0.5, 0.1], [0.5, 2.0, -0.2]]]))
    tr = st.params_to_matrix("translation", torch.tensor([[0.3, -0.4]]))
    assert torch.allclose(tr, torch.tensor([[[1.0, 0, 0.3], [0, 1.0, -0.4]]]))
    assert ST_TRANSFORMS == {k: len(v) for k, v in st.IDENTITY_PARAMS.items()}


def test_identity_warp_is_a_no_op():
    x = torch.rand(3, 5, 17, 17)
    assert torch.allclose(st.warp(x, st.identity(3)), x, atol=1e-5)


def test_identity_warp_to_half_size_is_2x2_average_pooling():
    # align_corners=False: each output centre lies between four input centres
    x = torch.rand(2, 1, 60, 60)
    assert torch.allclose(st.warp(x, st.identity(2), 30), torch.nn.functional.avg_pool2d(x, 2), atol=1e-5)


@pytest.mark.parametrize("degrees", [90.0, -90.0, 180.0])
def test_quarter_turns_match_rot90_exactly(degrees):
    x = torch.rand(1, 1, 16, 16)
    turned = st.warp(x, st.rotation_matrix(torch.tensor([degrees])), padding_mode="zeros")
    expected = torch.rot90(x, k=int(degrees // 90) % 4, dims=(-2, -1))  # rot90: counter-clockwise
    assert torch.allclose(turned, expected, atol=1e-5)


@pytest.mark.parametrize("degrees", [30.0, -45.0, 75.0])
def test_rotation_matches_torchvision_rotate(degrees):
    img = blob()
    ours = st.warp(img, st.rotation_matrix(torch.tensor([degrees])), padding_mode="zeros")
    theirs = TF.rotate(img, degrees, interpolation=InterpolationMode.BILINEAR)
    assert (ours - theirs).abs().max() < 0.05  # interpolation differences only
    wrong_way = TF.rotate(img, -degrees, interpolation=InterpolationMode.BILINEAR)
    assert (ours - wrong_way).abs().max() > 0.3


def test_two_resamples_equal_one_with_the_product_matrix():
    img = blob(40)
    a = torch.tensor([[[0.9, -0.2, 0.05], [0.25, 1.1, -0.1]]])
    b = torch.tensor([[[1.05, 0.1, -0.08], [-0.15, 0.95, 0.04]]])
    twice = st.warp(st.warp(img, a), b)
    once = st.warp(img, st.compose(a, b))
    assert (twice - once)[..., 8:-8, 8:-8].abs().max() < 0.03
    # exact where no interpolation happens: quarter turns
    r = st.rotation_matrix(torch.tensor([90.0]))
    x = torch.rand(1, 1, 12, 12)
    assert torch.allclose(st.warp(st.warp(x, r), r), st.warp(x, st.compose(r, r)), atol=1e-5)


def test_invert_undoes_compose():
    theta = torch.tensor([[[0.9, -0.2, 0.05], [0.25, 1.1, -0.1]]])
    assert torch.allclose(st.compose(theta, st.invert(theta)), st.identity(1), atol=1e-6)

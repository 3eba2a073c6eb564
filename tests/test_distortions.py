"""Generators: sizes and ranges, seeded reproducibility, and the returned transform undoes exactly."""

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from trainables import st
from trainables.data import DistortedStream, generator
from trainables.datasets import dataset_spec, make_distortion
from trainables.registry import DATASETS

SIDES = {"rotated-mnist": 28, "translated-mnist": 60, "scaled-mnist": 112, "rotated360-mnist": 28}


def corr(a, b):
    a, b = a.flatten(1) - a.flatten(1).mean(1, keepdim=True), b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


@pytest.mark.parametrize("dataset", DATASETS)
def test_sizes_ranges_and_clamp(dataset, digits, splits):
    distortion = make_distortion(dataset)
    images, params = distortion(digits, generator(1, "cpu"), splits.train_x[:200].float() / 255)
    assert images.shape == (64, 1, SIDES[dataset], SIDES[dataset])
    assert images.min() >= 0 and images.max() <= 1.0
    if dataset == "rotated-mnist":
        assert params.abs().max() <= 90 and params.std() > 30
    elif dataset == "rotated360-mnist":
        assert params.abs().max() <= 180 and params.abs().max() > 90 and params.std() > 60
    elif dataset == "translated-mnist":
        assert params.shape == (64, 2) and params.abs().max() <= 16 and torch.equal(params, params.round())
    else:
        assert 0.5 <= params.min() and params.max() <= 4.0 and params.log2().std() > 0.5


@pytest.mark.parametrize("dataset", ["translated-mnist", "scaled-mnist"])
def test_clutter_is_added(dataset, digits, splits):
    distortion = make_distortion(dataset)
    params = distortion.sample(64, generator(0, "cpu"), "cpu")
    clean = distortion.render(digits, params)
    cluttered = distortion.render(digits, params, generator(1, "cpu"), splits.train_x[:200].float() / 255)
    extra = (cluttered - clean).clamp_min(0).flatten(1).sum(1)
    assert (extra > 0).float().mean() > 0.9  # almost every image gets visible clutter


@pytest.mark.parametrize("dataset", DATASETS)
def test_fixed_seed_gives_identical_batches_and_new_seeds_fresh_draws(dataset, splits):
    def first_batch(seed):
        stream = DistortedStream(splits.train_x[:300], splits.train_y[:300], make_distortion(dataset), 100,
                                 splits.train_x, shuffle=True)
        return next(iter(stream.batches(seed)))

    a, b, c = first_batch(7), first_batch(7), first_batch(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[2], c[2])


def test_rotation_turns_like_torchvision(digits):
    distortion = make_distortion("rotated-mnist")
    images, angles = distortion(digits[:8], generator(3, "cpu"))
    for image, digit, angle in zip(images, digits[:8], angles, strict=False):
        theirs = TF.rotate(digit[None], float(angle), interpolation=InterpolationMode.BILINEAR)
        assert (image - theirs).abs().mean() < 0.02


@pytest.mark.parametrize("dataset", DATASETS)
def test_oracle_theta_recovers_the_clean_digit(dataset, digits):
    """Warping with the inverse of the returned transform gives back the canonical-pose digit."""
    distortion = make_distortion(dataset)
    params = distortion.sample(64, generator(5, "cpu"), "cpu")
    images = distortion.render(digits, params)
    canonical = distortion.render(digits, distortion.canonical(64, "cpu"))
    undone = st.warp(images, distortion.oracle_theta(params), None, "zeros")
    if dataset == "translated-mnist":
        assert torch.allclose(undone, canonical, atol=1e-5)  # integer shifts: exact
    elif dataset == "rotated-mnist":
        assert corr(undone, canonical).min() > 0.9
    else:
        big = params >= 1.0  # downscaled digits lose detail: compare the upscaled ones tightly
        assert corr(undone[big], canonical[big]).min() > 0.95
        assert corr(undone, canonical).min() > 0.75
    # and the inverse of the wrong sign does not
    wrong = st.warp(images, st.invert(distortion.oracle_theta(params)), None, "zeros")
    assert corr(wrong, canonical).mean() < corr(undone, canonical).mean() - 0.2


def test_registry_and_generators_agree():
    """Each MNIST dataset draws its own generator, whose params measure the spec's pose kind."""
    generators = {d: (type(make_distortion(d)), dataset_spec(d).draw_args) for d in DATASETS}
    assert len(set(generators.values())) == len(DATASETS)  # a generator class, or its arguments, of its own
    assert all(make_distortion(d).pose_kind == dataset_spec(d).pose_kind for d in DATASETS)


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_rotated_render_equals_the_affine_grid_warp_it_replaces(splits, dtype, atol):
    """The elementwise rotation grid is affine_grid's (up to float rounding), so the images are st.warp's."""
    distortion = make_distortion("rotated-mnist")
    digits = (splits.train_x[:40].float() / 255.0).to(dtype)
    angles = torch.cat([torch.tensor([0.0, 90, -90, 45, -30, 1e-3, 89.99, 180]),
                        torch.linspace(-90, 90, 32)]).to(dtype)
    expected = st.warp(digits[:, None], st.rotation_matrix(angles), 28, padding_mode="zeros")
    assert torch.allclose(distortion.render(digits, angles), expected, atol=atol, rtol=0)
    quarter = distortion.render(digits, torch.full((40,), 90.0, dtype=dtype))
    assert torch.allclose(quarter[:, 0], torch.rot90(digits, 1, (1, 2)), atol=atol)  # exact pixel turn, CCW


def test_scaled_render_equals_the_bilinear_warp_it_replaces(splits):
    """The separable matmul render is grid_sample's bilinear scaling (zeros padding), to float precision."""
    distortion = make_distortion("scaled-mnist")
    digits = splits.train_x[:32].float() / 255.0
    scales = torch.tensor([0.5, 0.71, 1.0, 1.37, 2.0, 3.3, 4.0] * 4 + [0.6, 1.9, 2.5, 3.9])
    theta = st.identity(32, "cpu", digits.dtype) * (112 / 28.0 / scales)[:, None, None]
    expected = st.warp(digits[:, None], theta, 112, padding_mode="zeros").clamp(max=1.0)
    assert torch.allclose(distortion.render(digits, scales), expected, atol=1e-5)


def test_scaled_clutter_is_the_authors_resized_crop_pasted_the_obvious_way(splits):
    """Each patch is a 6×6 crop resized by ``F.interpolate`` to 2s × 2s (s in 1..9, shrunk to fit),
    centred at its drawn position and added: the authors' loop, replayed per patch."""
    distortion, n = make_distortion("scaled-mnist"), 4
    pool = splits.train_x[:50].float() / 255.0
    canvas = torch.zeros(n, 112, 112)
    gen = generator(5, "cpu")
    distortion._add_clutter(canvas, pool, generator(5, "cpu"))
    k = distortion.clutter
    pick = torch.randint(0, 50, (n * k,), generator=gen)
    crop = torch.randint(0, 28 - 6 + 1, (n * k, 2), generator=gen)
    centre = torch.randint(0, 112 - 4, (n * k, 2), generator=gen) + 2
    half = torch.randint(0, 9, (n * k,), generator=gen) + 1
    expected = torch.zeros(n, 112, 112)
    for i in range(n * k):
        (cy, cx), s = centre[i].tolist(), int(half[i])
        s = min(s, 112 - max(cy, cx), min(cy, cx))
        patch = pool[pick[i], crop[i, 0]:crop[i, 0] + 6, crop[i, 1]:crop[i, 1] + 6]
        resized = torch.nn.functional.interpolate(patch[None, None], size=(2 * s, 2 * s), mode="bilinear")[0, 0]
        expected[i // k, cy - s:cy + s, cx - s:cx + s] += resized
    assert torch.allclose(canvas, expected, atol=1e-5)

"""``trainables.augment``: the plankton augmentation against its definition, the unchanged stream, and which
stream each dataset draws."""

import math

import torch

from trainables import st
from trainables.augment import PlanktonAugment, Unchanged
from trainables.data import generator
from trainables.datasets import dataset_names, dataset_spec


def train_distortion(dataset: str):
    return dataset_spec(dataset).train_distortion()


def eval_distortion(dataset: str):
    return dataset_spec(dataset).eval_distortion()


def test_augmentation_is_seeded_on_device_and_in_range():
    aug, gen = PlanktonAugment(side=95), generator(0, "cpu")
    params = aug.sample(4000, gen, "cpu")
    angle, shear, scale, flip, dx, dy = params.T
    assert angle.abs().max() <= 180 and angle.abs().max() > 170 and shear.abs().max() <= 20
    assert 1 / 1.3 <= scale.min() and scale.max() <= 1.3 and abs(float(torch.log(scale).mean())) < 0.01
    assert 0.45 < float(flip.mean()) < 0.55 and max(dx.abs().max(), dy.abs().max()) <= 10
    images = torch.rand(3, 1, 95, 95)
    first = aug(images, generator(7, "cpu"))
    assert first[0].shape == (3, 1, 95, 95) and torch.equal(first[0], aug(images, generator(7, "cpu"))[0])
    assert not torch.equal(first[0], aug(images, generator(8, "cpu"))[0])


def test_augmentation_transforms_match_their_definitions():
    aug, n = PlanktonAugment(side=95), 2
    pose = aug.canonical(n, "cpu")
    images = torch.rand(n, 1, 95, 95)
    assert torch.allclose(aug.render(images, pose), images, atol=1e-4)  # float32 grid rounding on 95 px
    flipped = pose.clone()
    flipped[:, 3] = 1.0
    assert torch.allclose(aug.render(images, flipped), images.flip(-1), atol=1e-4)
    shifted = pose.clone()
    shifted[:, 4], shifted[:, 5] = 3.0, -2.0  # 3 px right, 2 px up
    assert torch.allclose(aug.render(images, shifted)[..., 10:80, 10:80], images[..., 12:82, 7:77], atol=1e-4)
    turned = pose.clone()
    turned[:, 0] = 90.0
    assert torch.allclose(aug.theta(turned), st.rotation_matrix(torch.full((n,), 90.0)), atol=1e-6)
    sheared = pose.clone()
    sheared[:, 1], sheared[:, 2] = 20.0, 1.25
    theta = aug.theta(sheared)  # x-shear then x1.25: det of the sampling matrix = 1 / 1.25^2
    assert torch.allclose(torch.linalg.det(theta[:, :, :2]), torch.full((n,), 1 / 1.25**2))
    assert torch.allclose(theta[:, 0, 1], torch.full((n,), -math.tan(math.radians(20)) / 1.25))
    random = aug.sample(n, generator(1, "cpu"), "cpu")
    assert torch.allclose(st.compose(aug.theta(random), aug.oracle_theta(random)), st.identity(n), atol=1e-5)
    background = aug.render(torch.zeros(n, 1, 95, 95), random)
    assert background.abs().max() == 0  # outside the image is background, 0


def test_streams_augment_training_only():
    assert isinstance(train_distortion("plankton"), PlanktonAugment)
    for distortion in (eval_distortion("plankton"), train_distortion("svhn"), eval_distortion("svhn")):
        assert distortion.pose_kind == "" and not distortion.stochastic and not distortion.needs_pool
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(eval_distortion("svhn")(images, generator(0, "cpu"))[0], images)


def test_unchanged_leaves_images_and_poses_alone_on_every_shape():
    unchanged = Unchanged(64)
    images = torch.rand(5, 3, 64, 64)
    params = unchanged.sample(5, generator(0, "cpu"), "cpu")
    assert torch.equal(params, torch.zeros(5)) and torch.equal(unchanged.canonical(5, "cpu"), params)
    assert unchanged.render(images, params) is images
    assert torch.equal(unchanged.oracle_theta(params), st.identity(5))


def test_each_dataset_draws_its_own_stream_and_the_mnist_family_the_same_for_val_and_test():
    for dataset in [name for name in dataset_names() if dataset_spec(name).pose_kind]:
        train, evaluation = train_distortion(dataset), eval_distortion(dataset)
        assert type(train) is type(evaluation) and train.side == evaluation.side and train.pose_kind
    assert isinstance(train_distortion("svhn-multi"), Unchanged) and train_distortion("svhn-multi").side == 64
    assert eval_distortion("plankton").side == 95
    out, _ = train_distortion("plankton")(torch.rand(4, 1, 95, 95), generator(0, "cpu"))
    assert out.shape == (4, 1, 95, 95) and 0 <= out.min() and out.max() <= 1  # bilinear warps stay in the input's range

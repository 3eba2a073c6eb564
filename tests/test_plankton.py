"""PlanktonSet from a PNG class-per-folder tree: fitting, both layouts, seeded splits, errors, augmentation, the
rotation consistency, a CLI run."""

import json
import math

import numpy as np
import pytest
import torch

from trainables import metrics, st
from trainables.augment import PlanktonAugment
from trainables.data import DataError, generator, load_data
from trainables.datasets import dataset_spec
from trainables.evaluate import rotation_consistency
from trainables.models import STNClassifier
from trainables.plankton import fit_image


def write_image(path, width, height, grey, border=1):
    """A dark ``grey`` object filling a ``width`` x ``height`` image within a white border (plankton: dark on white)."""
    from PIL import Image

    array = np.full((height, width), 255, dtype=np.uint8)
    array[border:height - border, border:width - border] = grey
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_tree(root, classes=("copepod", "diatom", "larva"), per_class=10):
    """Class i's images have grey level 10 * i + k (k = image index) and alternate landscape / portrait."""
    for i, name in enumerate(classes):
        for k in range(per_class):
            size = (40 + k, 20) if k % 2 else (12, 30 + k)
            write_image(root / name / f"{k:03d}.png", *size, grey=10 * i + k)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STN_STUDY_CACHE", str(tmp_path / "cache"))


def ids(images):
    """Each image's grey level back from the centre pixel (inverted: 255 - grey)."""
    return (255 - images[:, 0, 47, 47].long()).tolist()


def test_fit_keeps_the_aspect_inverts_and_pads_with_background(tmp_path):
    write_image(tmp_path / "a.png", 50, 10, grey=100, border=0)  # scaled up x1.9: 95 x 19, centred vertically
    fitted = fit_image(tmp_path / "a.png")
    assert fitted.shape == (95, 95) and fitted.dtype == np.uint8
    rows = np.flatnonzero(fitted.max(axis=1) > 0)
    assert (rows.min(), rows.max()) == (38, 56)  # 19 rows, (95 - 19) // 2 above
    assert fitted[:38].max() == 0 and fitted[57:].max() == 0  # padding = background = 0
    assert fitted[47, 47] == 155  # the dark object is bright after inversion
    write_image(tmp_path / "b.png", 190, 300, grey=0, border=0)  # scaled down: 60 x 95, centred horizontally
    fitted = fit_image(tmp_path / "b.png")
    assert np.flatnonzero(fitted.max(axis=0)).tolist() == list(range(17, 77)) and fitted.min(axis=1).max() == 0


def test_one_level_tree_gets_a_fixed_stratified_split(tmp_path):
    write_tree(tmp_path / "tree")
    data = load_data("plankton", tmp_path / "tree")
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (24, 3, 3)  # 8 / 1 / 1 per class
    for labels in (data.train_y, data.val_y, data.test_y):
        assert sorted(set(labels.tolist())) == [0, 1, 2]  # every class in every split, labels by sorted name
    assert data.train_x.shape[1:] == (1, 95, 95) and data.train_x.dtype == torch.uint8
    seen = ids(data.train_x) + ids(data.val_x) + ids(data.test_x)
    assert sorted(seen) == sorted(10 * i + k for i in range(3) for k in range(10))  # disjoint and complete
    for x, y in ((data.train_x, data.train_y), (data.val_x, data.val_y), (data.test_x, data.test_y)):
        assert [g // 10 for g in ids(x)] == y.tolist()  # images keep their labels
    again = load_data("plankton", tmp_path / "tree")  # from the decoded cache
    assert torch.equal(again.test_x, data.test_x) and again.digest == data.digest
    line = data.describe()
    assert "PlanktonSet tree" in line and "3 classes, one level" in line and "24 train / 3 val / 3 test images" in line


def test_given_splits_are_used_and_val_is_held_out_when_absent(tmp_path):
    write_tree(tmp_path / "tree" / "train", per_class=6)
    write_tree(tmp_path / "tree" / "test", classes=("copepod", "larva"), per_class=2)
    data = load_data("plankton", tmp_path / "tree")
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (15, 3, 4)  # 1 of 6 per class held out
    assert sorted(data.test_y.tolist()) == [0, 0, 2, 2]  # "diatom" (1) keeps its label though absent from test/
    write_tree(tmp_path / "tree" / "val", classes=("diatom",), per_class=2)
    data = load_data("plankton", tmp_path / "tree")
    assert (len(data.train_y), len(data.val_y)) == (18, 2) and data.val_y.tolist() == [1, 1]
    assert "given splits" in data.describe()


def test_missing_or_unreadable_data_fail_in_one_line(tmp_path):
    cases = [(None, "--data-root"), (tmp_path / "nowhere", "no PlanktonSet tree"), (tmp_path, "no images")]
    for root, needle in cases:
        with pytest.raises(DataError) as info:
            load_data("plankton", root, download=True)
        message = str(info.value)
        assert message.startswith("data_root:") and needle in message and "\n" not in message
    write_tree(tmp_path / "tree", per_class=3)
    (tmp_path / "tree" / "larva" / "001.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read the image .*001.png"):
        load_data("plankton", tmp_path / "tree")


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
    plankton, svhn = dataset_spec("plankton"), dataset_spec("svhn")
    assert isinstance(plankton.train_distortion(), PlanktonAugment)
    for distortion in (plankton.eval_distortion(), svhn.train_distortion(), svhn.eval_distortion()):
        assert distortion.pose_kind == "" and not distortion.stochastic and not distortion.needs_pool
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(svhn.eval_distortion()(images, generator(0, "cpu"))[0], images)


def bars():
    """Two 95x95 images: a bright horizontal bar and a vertical one (orientations 0° and 90°)."""
    images = torch.zeros(2, 1, 95, 95, dtype=torch.uint8)
    images[0, 0, 45:50, 15:80] = 255
    images[1, 0, 15:80, 45:50] = 255
    return images


def orientation(images):
    """Each image's axis (°, counter-clockwise from x, y up) from its second central moments."""
    coords = torch.arange(95, dtype=torch.float32) - 47.0
    x, y, w = coords[None, :], -coords[:, None], images[:, 0]
    mass = w.sum((1, 2))
    cx, cy = (w * x).sum((1, 2)) / mass, (w * y).sum((1, 2)) / mass
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    m20, m02, m11 = ((w * d).sum((1, 2)) for d in (dx * dx, dy * dy, dx * dy))
    return torch.rad2deg(0.5 * torch.atan2(2 * m11, m20 - m02))


class MomentST:
    """An oracle ST: it turns each image back by the axis it measures."""

    def transform(self, images):
        return st.rotation_matrix(-orientation(images))


def test_rotation_consistency_of_17_rotated_copies():
    assert orientation(bars().float()).tolist() == pytest.approx([0.0, 90.0], abs=1e-4)
    assert rotation_consistency(MomentST(), bars()) < 0.5  # every copy ends on one axis (up to interpolation)
    model = STNClassifier("plankton", "STN-C0x2", "rotation").eval()
    with torch.no_grad():
        model.localisation.params.bias.fill_(math.radians(10.0))  # every step turns by 10°: 20° composed
    assert metrics.predicted_pose("rotation", model.transform(bars().float()), 95).tolist() == pytest.approx([20.0] * 2)
    assert rotation_consistency(model, bars()) == pytest.approx(810 / 17, abs=1e-3)  # a constant angle: 810/17


def test_cli_trains_and_evaluates_on_plankton(tmp_path, capsys):
    from trainables.train import main

    write_tree(tmp_path / "tree", per_class=4)  # 2 / 1 / 1 per class
    args = ["--dataset", "plankton", "--data-root", str(tmp_path / "tree"), "--variant", "STN-SL7", "--epochs", "1",
            "--batch-size", "6", "--device", "cpu", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    assert "PlanktonSet tree" in capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    metrics = result["metrics"]
    assert result["status"] == "completed" and 0.0 <= metrics["test_error"] <= 1.0
    assert not any(k.startswith(("pose_sd", "angle_", "feature_misalignment", "val_pose")) for k in metrics)
    assert {f"eq1_residual_rotation_d{d}" for d in (2, 4, 7, 10)} <= set(metrics)
    assert 0.0 <= metrics["rotation_consistency_deg"] <= 90.0

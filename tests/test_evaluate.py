"""``trainables.evaluate``: the per-epoch validation against a count by hand over the same draws, and the Fig. 2
data. (The alignment, Eq. 1 and misalignment metrics against oracles: tests/test_metrics.py.)"""

from dataclasses import replace

import pytest
import torch

from trainables import metrics
from trainables.data import DistortedStream, stream_seed
from trainables.datasets import dataset_spec
from trainables.evaluate import EVAL_SEED, example_grid, validate
from trainables.models import STNClassifier


@pytest.fixture(scope="module")
def small(splits):
    """The session's splits with 200 val digits: the same code path, a tenth of the passes."""
    return replace(splits, val_x=splits.val_x[:200], val_y=splits.val_y[:200])


def test_validation_error_is_the_share_of_wrong_val_draws_and_the_model_keeps_its_mode(small):
    torch.manual_seed(0)
    model = STNClassifier("rotated-mnist", "CNN").train()
    out = validate(model, small)
    assert model.training and set(out) == {"val_error"}  # a CNN has no pose to measure
    stream = DistortedStream(small.val_x, small.val_y, dataset_spec("rotated-mnist").eval_distortion(), 500)
    model.eval()
    with torch.no_grad():
        wrong = sum(metrics.wrong(model(x), y) for x, y, _ in stream.batches(stream_seed(EVAL_SEED, "val")))
    assert out["val_error"] == wrong / 200


def test_an_sts_validation_adds_its_alignment_and_the_spread_of_theta(small):
    torch.manual_seed(0)
    out = validate(STNClassifier("rotated-mnist", "STN-C0").eval(), small)
    assert {"val_error", "val_pose_sd", "val_angle_slope"} <= set(out)
    assert any(k.startswith("val_theta_") for k in out)
    only_shift = validate(STNClassifier("rotated-mnist", "STN-C0", "translation"), small)
    assert not any(k.startswith("val_theta_") for k in only_shift)  # a translation ST has no rotation to spread


def test_the_example_grid_shows_each_digit_under_the_training_transforms_and_the_st_output(splits):
    torch.manual_seed(0)
    digits = splits.test_x[:3]
    grid = example_grid(STNClassifier("rotated-mnist", "STN-C0").eval(), digits)
    assert grid["example_inputs"].shape == grid["example_st_outputs"].shape == (3, 4, 28, 28)
    assert not (grid["example_inputs"][:, 0] == grid["example_inputs"][:, 1]).all()  # different rotations
    assert set(example_grid(STNClassifier("rotated-mnist", "CNN"), digits)) == {"example_inputs"}
    colour = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    svhn = example_grid(STNClassifier("svhn", "CNN"), colour)
    assert svhn["example_inputs"].shape == (2, 1, 32, 32)  # stored images: one column, as their channel mean
    assert torch.allclose(torch.from_numpy(svhn["example_inputs"][:, 0]), colour.float().mean(1) / 255.0)


def test_the_share_of_live_localisation_units_is_zero_when_every_relu_is_dead_and_one_when_none_is(small):
    """θ's zero-initialised layer reads the head's last ReLU units: with all of them at 0 for every input,
    θ is one constant for every image (the collapse a failed seed shows), whatever θ's layer holds."""
    torch.manual_seed(0)
    model = STNClassifier("rotated-mnist", "STN-SL1", "rotation").eval()
    last = [m for m in model.localisation.head if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias.fill_(-1e6)
        model.localisation.params.weight.normal_()
    dead = validate(model, small)
    assert dead["val_loc_alive"] == 0.0 and dead["val_theta_angle_sd"] == 0.0
    with torch.no_grad():
        last.bias.fill_(1e6)
    assert validate(model, small)["val_loc_alive"] == 1.0
    assert "val_loc_alive" not in validate(STNClassifier("rotated-mnist", "CNN"), small)

"""Metrics against hand-computed values and oracles that pin the pose formulas to the generators."""

import math

import numpy as np
import pytest
import torch

from trainables import metrics, st
from trainables.architectures import stride_after_blocks
from trainables.data import generator
from trainables.datasets import dataset_spec, make_distortion
from trainables.evaluate import eq1_residuals, feature_misalignment
from trainables.models import STNClassifier
from trainables.registry import DATASETS


def test_pose_sd_by_hand():
    # class 0: 1, 3 (mean 2); class 1: 10, 14 (mean 12): squares 1+1+4+4 = 10 over N = 4
    assert metrics.pose_sd([1, 3, 10, 14], [0, 0, 1, 1]) == pytest.approx(math.sqrt(10 / 4))
    # 2-D poses: squared norms of deviations, pooled
    z = [[0, 0], [2, 0], [5, 5], [5, 7]]
    assert metrics.pose_sd(z, [0, 0, 1, 1]) == pytest.approx(math.sqrt((1 + 1 + 1 + 1) / 4))
    assert metrics.pose_sd([4, 4, 9], [3, 3, 5]) == 0.0


@pytest.mark.parametrize("slope,intercept", [(1.0, 0.0), (-1.0, 2.5), (0.0, -3.0), (0.32, 1.0)])
def test_deming_recovers_exact_lines(slope, intercept):
    x = np.linspace(-90, 90, 37)
    m, c = metrics.deming(x, slope * x + intercept)
    assert m == pytest.approx(slope, abs=1e-9) and c == pytest.approx(intercept, abs=1e-7)


def test_deming_matches_the_closed_form_and_differs_from_least_squares():
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    y = np.array([0.0, 2.0, 1.0, 4.0, 3.0])
    sxx, syy, sxy = np.var(x), np.var(y), np.mean((x - x.mean()) * (y - y.mean()))
    closed = (syy - sxx + math.sqrt((syy - sxx) ** 2 + 4 * sxy**2)) / (2 * sxy)  # δ = 1
    m, c = metrics.deming(x, y)
    assert m == pytest.approx(closed) and c == pytest.approx(y.mean() - closed * x.mean())
    assert m != pytest.approx(sxy / sxx)  # orthogonal regression is not OLS on noisy data


@pytest.mark.parametrize("dataset", DATASETS)
def test_oracle_theta_gives_zero_pose_sd(dataset):
    distortion = make_distortion(dataset)
    params = distortion.sample(400, generator(2, "cpu"), "cpu")
    labels = torch.arange(400) % 10
    t = metrics.applied_pose(distortion.pose_kind, params)
    p = metrics.predicted_pose(distortion.pose_kind, distortion.oracle_theta(params), distortion.side)
    assert metrics.pose_sd((t + p).numpy(), labels.numpy()) < 1e-3
    identity = metrics.predicted_pose(distortion.pose_kind, st.identity(400), distortion.side)
    assert metrics.pose_sd((t + identity).numpy(), labels.numpy()) > 0.3 * float(t.std())
    if dataset == "rotated-mnist":
        slope, intercept = metrics.deming(t.numpy(), p.numpy())
        assert slope == pytest.approx(-1.0, abs=1e-4) and intercept == pytest.approx(0.0, abs=1e-3)
        assert metrics.deming(t.numpy(), identity.numpy())[0] == pytest.approx(0.0, abs=1e-9)


def test_feature_misalignment_zero_for_an_oracle_and_large_for_the_identity(splits):
    torch.manual_seed(0)
    model = STNClassifier("rotated-mnist", "STN-C0").eval()
    digits = splits.test_x[:200]
    distortion = make_distortion("rotated-mnist")
    clean = digits.float() / 255
    params = distortion.sample(200, generator(9, "cpu"), "cpu")
    original = distortion.render(clean, distortion.canonical(200, "cpu"))
    rotated = distortion.render(clean, params)
    with torch.no_grad():
        a0 = model.forward_details(original).aligned_features
        oracle = model.forward_details(rotated, theta=distortion.oracle_theta(params)).aligned_features
        same = model.forward_details(rotated).aligned_features
    assert metrics.misalignment(a0, a0) == 0.0
    assert metrics.misalignment(oracle, a0) < 0.1
    assert metrics.misalignment(same, a0) > 0.5
    assert feature_misalignment(model, digits) > 0.5  # the identity-initialised STN aligns nothing


def test_eq1_translation_realigns_and_quarter_turns_do_not(splits):
    torch.manual_seed(0)
    model = STNClassifier("rotated-mnist", "CNN").eval()
    residuals = eq1_residuals(model, splits.test_x[:64])
    for depth in (1, 2):
        assert residuals[f"eq1_residual_translation_d{depth}"] < 1e-6
        assert residuals[f"eq1_residual_rotation_d{depth}"] > 0.1
        assert residuals[f"eq1_residual_scale_d{depth}"] > 0.1
    assert stride_after_blocks(model.arch, 1) == 2 and stride_after_blocks(model.arch, 2) == 4


def test_eq1_rotation_invariant_filters_realign_under_rotation(splits):
    """Filters symmetric under quarter turns make Γ rotation-covariant: the residual vanishes."""
    torch.manual_seed(0)
    model = STNClassifier("rotated-mnist", "CNN").eval()
    with torch.no_grad():
        for block in model.blocks:
            conv = block[0]
            w = conv.weight
            conv.weight.copy_(sum(torch.rot90(w, k, dims=(-2, -1)) for k in range(4)) / 4)
    residuals = eq1_residuals(model, splits.test_x[:64])
    assert residuals["eq1_residual_rotation_d1"] < 1e-6
    assert residuals["eq1_residual_rotation_d2"] < 1e-6


def _val_draw(splits, dataset):
    """The val set exactly as ``validate`` draws it (same stream, same seed)."""
    from trainables.data import DistortedStream, stream_seed
    from trainables.evaluate import EVAL_SEED

    distortion = make_distortion(dataset)
    stream = DistortedStream(splits.val_x, splits.val_y, distortion, 500, splits.train_x)
    batches = list(stream.batches(stream_seed(EVAL_SEED, "val")))
    return distortion, torch.cat([b[2] for b in batches]), torch.cat([b[1] for b in batches])


@pytest.mark.parametrize("dataset", DATASETS)
def test_alignment_of_an_oracle_st_is_perfect_and_of_the_identity_is_the_spread_of_the_draws(splits, dataset):
    from trainables.evaluate import alignment

    distortion, params, labels = _val_draw(splits, dataset)
    oracle = alignment(distortion.pose_kind, params, distortion.oracle_theta(params), labels, distortion.side)
    assert oracle["pose_sd"] < 1e-3
    identity = alignment(distortion.pose_kind, params, st.identity(len(params)), labels, distortion.side)
    t = metrics.applied_pose(distortion.pose_kind, params).double().reshape(len(params), -1).numpy()
    by_hand = sum(((t[labels.numpy() == c] - t[labels.numpy() == c].mean(0)) ** 2).sum() for c in range(10))
    assert identity["pose_sd"] == pytest.approx(math.sqrt(by_hand / len(t)), rel=1e-6)
    if dataset_spec(dataset).pose.has_slope:
        assert oracle["angle_slope"] == pytest.approx(-1.0, abs=1e-4)
        assert oracle["angle_intercept"] == pytest.approx(0.0, abs=1e-3)
        assert identity["angle_slope"] == pytest.approx(0.0, abs=1e-9)
    else:
        assert "angle_slope" not in oracle


def test_composed_pose_is_named_apart_for_iterated_variants(splits):
    """A localisation net that always outputs a 10° rotation θ = R(10°): p = −atan2(θ01 − θ10, θ00 + θ11)
    = −atan2(−2 sin 10°, 2 cos 10°) = +10° for the first ST, +20° for the composed R(10°)·R(10°) of ×2;
    constant offsets leave the pose SD alone."""
    from trainables.evaluate import evaluate

    torch.manual_seed(0)
    single, _ = evaluate(STNClassifier("rotated-mnist", "STN-SL1", "rotation"), splits, passes=1)
    assert "pose_sd_composed" not in single and "angle_slope_composed" not in single
    model = STNClassifier("rotated-mnist", "STN-SL1x2", "rotation")
    with torch.no_grad():
        model.localisation.params.bias.fill_(math.radians(10.0))
    iterated, _ = evaluate(model, splits, passes=1)
    assert iterated["angle_slope"] == pytest.approx(0.0, abs=1e-6)
    assert iterated["angle_slope_composed"] == pytest.approx(0.0, abs=1e-6)
    assert iterated["angle_intercept"] == pytest.approx(10.0, abs=1e-3)
    assert iterated["angle_intercept_composed"] == pytest.approx(20.0, abs=1e-3)
    assert iterated["pose_sd_composed"] == pytest.approx(iterated["pose_sd"], rel=1e-5)


def test_sequence_errors_and_the_summed_loss_by_hand():
    labels = torch.tensor([[1, 2, 10, 10, 10], [3, 10, 10, 10, 10], [4, 5, 6, 10, 10]])
    logits = torch.nn.functional.one_hot(labels, 11).float()
    assert metrics.wrong(logits, labels) == 0
    logits[1, 4] = torch.nn.functional.one_hot(torch.tensor(7), 11).float()  # one position of image 1 wrong
    logits[2, 0], logits[2, 1] = logits[2, 1].clone(), logits[2, 0].clone()  # two positions of image 2 wrong
    assert metrics.wrong(logits, labels) == 2  # images, not positions
    flat = torch.tensor([[0.0, 2.0], [3.0, 1.0], [1.0, 5.0]])  # the single-label path: argmax 1, 0, 1
    assert metrics.wrong(flat, torch.tensor([1, 1, 1])) == 1
    uniform = torch.zeros(4, 5, 11)  # every position ln 11 nats: the sum of 5 per-position means is 5 ln 11
    assert float(metrics.classification_loss(uniform, torch.randint(0, 11, (4, 5)))) == pytest.approx(5 * math.log(11))
    assert float(metrics.classification_loss(flat, torch.tensor([1, 0, 1]))) == pytest.approx(
        np.mean([math.log(1 + math.exp(-2)), math.log(1 + math.exp(-2)), math.log(1 + math.exp(-4))]))


def test_axis_distance_is_taken_mod_180():
    assert metrics.axis_distance(10.0, 350.0) == pytest.approx(20.0)
    assert metrics.axis_distance(0.0, 179.0) == pytest.approx(1.0)
    assert metrics.axis_distance(0.0, 90.0) == pytest.approx(90.0)
    assert metrics.axis_distance(45.0, 225.0) == pytest.approx(0.0)  # opposite directions: one orientation


def test_rotation_consistency_by_hand():
    angles = metrics.rotation_angles().numpy()
    assert len(angles) == 17 and angles[0] == -180.0 and np.allclose(np.diff(angles), 360 / 17) and angles[-1] < 180
    applied = np.tile(angles, (3, 1))
    oracle = -applied + np.array([[0.0], [30.0], [-75.0]])  # predicts -applied (plus an offset per image)
    assert metrics.rotation_consistency(applied + oracle) == pytest.approx(0.0, abs=1e-9)
    # A constant-angle ST: z = applied + c. 17 is odd, so mod 180 the z are 17 evenly spaced orientations,
    # δ = 180/17 apart; from any of them the others lie at δ·(1, 1, 2, 2, …, 8, 8): 72 δ over 16 = 810/17°.
    for c in (0.0, 12.5, -100.0):
        assert metrics.rotation_consistency(applied + c) == pytest.approx(810 / 17)
    # Three copies, z = 0, 10, 30: summed distances 40, 30, 50; the least (from 10) over the 2 others = 15.
    assert metrics.rotation_consistency([[0.0, 10.0, 30.0]]) == pytest.approx(15.0)
    assert metrics.rotation_consistency([[175.0, 5.0, 0.0]]) == pytest.approx(5.0)  # 175 is 5 from 0 mod 180


def test_rotation_consistency_of_90_and_180_degree_ambiguities():
    """An ST that returns each copy up or upside down is consistent mod 180; one off by a quarter turn is not."""
    flips = np.where(np.arange(17) % 2 == 0, 0.0, 180.0)[None]
    assert metrics.rotation_consistency(flips + 40.0) == pytest.approx(0.0, abs=1e-9)
    quarter = np.where(np.arange(17) < 9, 0.0, 90.0)[None]  # 9 copies at 0°, 8 at 90°
    assert metrics.rotation_consistency(quarter) == pytest.approx(8 * 90 / 16)  # from a 0° copy: 8 quarter turns
    assert metrics.rotation_consistency(quarter - 270.0) == pytest.approx(45.0)  # -270 ≡ 90 mod 180


def test_theta_parts_split_a_composed_transform_into_its_factors():
    """θ = R(φ)·s·(I + shear) + t reads back φ, log2 s, the shear's size and |t| (exact matrices)."""
    angles = torch.tensor([-60.0, 0.0, 30.0])
    theta = st.rotation_matrix(angles).double() * torch.tensor([0.5, 1.0, 2.0]).double()[:, None, None]
    theta[:, :, 2] = torch.tensor([[0.3, -0.4], [0.0, 0.0], [0.0, 0.1]]).double()
    parts = metrics.theta_parts(theta)
    assert torch.allclose(parts["angle"], metrics.predicted_pose("rotation", theta, 28), atol=1e-9)  # the pose's formula
    assert torch.allclose(parts["angle"], angles.double(), atol=1e-9)
    assert torch.allclose(parts["log2_scale"], torch.tensor([-1.0, 0.0, 1.0]).double(), atol=1e-9)
    assert torch.allclose(parts["shear"], torch.zeros(3).double(), atol=1e-9)
    assert torch.allclose(parts["shift"], torch.tensor([0.5, 0.0, 0.1]).double(), atol=1e-9)
    sheared = st.identity(1).double()
    sheared[0, 0, 1] = 0.2  # x' = x + 0.2 y: a similarity part I (plus a small turn) and a rest of size 0.1
    assert float(metrics.theta_parts(sheared)["shear"]) == pytest.approx(0.1 / (1 + 0.01) ** 0.5)
    spread = metrics.theta_spread(st.identity(5))
    assert all(v == 0 for v in spread.values())


@pytest.mark.parametrize("dataset", DATASETS)
def test_v1_pose_formulas_give_an_oracle_zero_and_agree_with_ours_where_they_should(dataset):
    """The formulas of 2001.05858 v1's code: an oracle ST still has pose SD 0, and for pure rotations and
    input-warped shifts they equal ours; they differ by design elsewhere (C1's pixel unit, per-axis scale)."""
    distortion = make_distortion(dataset)
    params = distortion.sample(400, generator(3, "cpu"), "cpu")
    labels = (torch.arange(400) % 10).numpy()
    oracle = distortion.oracle_theta(params)
    z = metrics.applied_pose_v1(distortion.pose_kind, params) + metrics.predicted_pose_v1(distortion.pose_kind, oracle)
    assert metrics.pose_sd(z.numpy(), labels) < 1e-3
    ours = metrics.predicted_pose(distortion.pose_kind, oracle, distortion.side)
    v1 = metrics.predicted_pose_v1(distortion.pose_kind, oracle)
    if distortion.pose_kind == "scale":  # the v1 vector's two axes sum to our scalar log2 det θ⁻¹
        assert torch.allclose(v1.sum(1), ours, atol=1e-4)
    else:
        assert torch.allclose(v1, ours, atol=1e-3)  # rotation; translation: 30 px = the 60-px input's half width


def test_v1_reads_c1_shifts_at_30_pixels_where_ours_reads_the_warped_maps_26():
    theta = st.identity(1).clone()
    theta[0, :, 2] = torch.tensor([0.1, -0.2])
    assert metrics.predicted_pose_v1("translation", theta).tolist()[0] == pytest.approx([-3.0, 6.0])
    assert metrics.predicted_pose("translation", theta, 52).tolist()[0] == pytest.approx([-2.6, 5.2])


def test_v1_rotation_reads_the_inverse_first_row_so_a_shear_moves_it():
    theta = st.identity(1).clone()
    theta[0, 0, 1] = 0.3  # a pure shear: both readings see a rotation in it, of different sizes
    v1 = float(metrics.predicted_pose_v1("rotation", theta))
    assert v1 == pytest.approx(math.degrees(math.atan2(-0.3, 1.0)), abs=1e-4)
    assert float(metrics.predicted_pose("rotation", theta, 28)) == pytest.approx(-math.degrees(math.atan2(0.3, 2.0)), abs=1e-4)


def test_full_turn_rotations_wrap_their_pose_and_slope_at_180_degrees():
    """±180° rotated MNIST: an ST off by 2° from the oracle has pose SD 2° and slope −1 also where the undoing
    angle crosses ±180° (read without the wrap, a turn of 358° would count as one of −2°'s opposite)."""
    from trainables.evaluate import alignment

    distortion = make_distortion("rotated360-mnist")
    assert distortion.max_degrees == 180 and distortion.pose_kind == "full-rotation"
    angles = torch.tensor([179.0, -179.0, 178.5, -178.5, 90.0, -90.0, 0.0, 45.0] * 50)
    labels = torch.arange(len(angles)) % 10
    oracle = alignment("full-rotation", angles, distortion.oracle_theta(angles), labels, 28)
    near = alignment("full-rotation", angles, st.rotation_matrix(-(angles + 2.0)), labels, 28)  # 2° too far
    assert oracle["pose_sd"] < 1e-3 and oracle["angle_slope"] == pytest.approx(-1.0, abs=1e-4)
    assert near["pose_sd"] == pytest.approx(0.0, abs=1e-3)  # every final pose is −2°: the same in every class
    assert near["angle_slope"] == pytest.approx(-1.0, abs=1e-4) and near["angle_intercept"] == pytest.approx(-2.0, abs=1e-3)
    unwrapped = alignment("rotation", angles, st.rotation_matrix(-(angles + 2.0)), labels, 28)
    assert unwrapped["pose_sd"] > 100  # the ±90° kind (the authors' formula) does not fold 358° back to −2°

"""The training loop: learns, diverges cleanly, resumes exactly, honours LR schedule and multipliers."""

import copy
import math

import pytest
import torch

from trainables.loop import ConfigError, TrainConfig, build_optimizer, train
from trainables.models import STNClassifier
from trainables.registry import VariantError


def small(**kw):
    base = dict(dataset="rotated-mnist", variant="STN-C0", epochs=2, train_size=1000, optimizer="adam", lr=1e-3,
                batch_size=128, test_passes=1, seed=0, device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow  # trains for a minute: the fast tier keeps the checks of mathematics
def test_adam_learns_well_below_chance(splits):
    result = train(small(epochs=4, train_size=4000), splits=splits)
    assert result.status == "completed"
    assert result.metrics["test_error"] < 0.5  # chance is 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    for key in ("val_error", "images_per_s", "pose_sd", "angle_slope", "feature_misalignment",
                "eq1_residual_rotation_d1", "eq1_residual_translation_d2"):
        assert key in result.metrics


def test_nan_loss_ends_diverged_at_once(splits):
    seen = []
    result = train(small(optimizer="sgd", lr=1e30, epochs=3), on_epoch=lambda r, s: seen.append(r), splits=splits)
    assert result.status == "diverged"
    assert "diverged at epoch 1" in result.message and "\n" not in result.message
    assert seen == [] and "test_error" not in result.metrics


def test_resume_from_a_checkpoint_matches_an_uninterrupted_run(splits):
    full = train(small(epochs=2, train_size=512), splits=splits, evaluate_at_end=False)
    saved = {}

    def stop_after_first(record, state):
        saved.update(state())
        return "stop"

    first = train(small(epochs=2, train_size=512), on_epoch=stop_after_first, splits=splits, evaluate_at_end=False)
    assert first.status == "stopped" and saved["epoch"] == 1
    resumed = train(small(epochs=2, train_size=512), splits=splits, resume=saved, evaluate_at_end=False)
    assert len(resumed.history) == 2
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert resumed.history[1]["train_loss"] == pytest.approx(full.history[1]["train_loss"], rel=1e-5)


def test_lr_drops_tenfold_at_each_milestone(splits):
    result = train(small(epochs=3, train_size=256, optimizer="sgd", lr=0.01), splits=splits, evaluate_at_end=False)
    assert [round(r["lr"], 8) for r in result.history] == [0.001, 0.0001, 0.0001]


def test_lr_multipliers_apply_to_localisation_and_pre_st_layers():
    model = STNClassifier("rotated-mnist", "STN-SL1")
    optimizer = build_optimizer(model, small(variant="STN-SL1", lr=0.01, loc_lr_mult=0.1, pre_st_lr_mult=2.0))
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == pytest.approx({"localisation": 0.001, "pre_st": 0.02, "classifier": 0.01})
    n = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())  # every parameter exactly once


@pytest.mark.parametrize("field,value,needle", [
    ("optimizer", "rmsprop", "allowed sgd, adam"),
    ("lr", 0.0, "lr: must be a finite number > 0"),
    ("lr", float("nan"), "lr: must be a finite number > 0"),
    ("momentum", -0.5, "momentum: must be"),
    ("epochs", 0, "epochs: must be an integer >= 1"),
    ("device", "tpu", "allowed auto, cpu, cuda"),
])
def test_invalid_options_fail_in_one_line(field, value, needle):
    with pytest.raises(ConfigError) as info:
        small(**{field: value}).validate()
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_invalid_variant_is_rejected_before_training():
    with pytest.raises(VariantError):
        small(variant="STN-C3").validate()


@pytest.mark.parametrize("variant", ["CNN", "STN-C1", "STN-SL1", "STN-DL1"])
def test_channels_last_computes_the_same_function(variant):
    """The CPU default layout changes speed only: same outputs, same gradients as contiguous."""
    torch.manual_seed(0)
    model = STNClassifier("rotated-mnist", variant)
    if model.localisation is not None:
        with torch.no_grad():  # a non-identity ST, so its warp is exercised
            model.localisation.params.bias.add_(0.1)
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    images = torch.rand(8, 1, 28, 28)
    out, out_fast = model(images), fast(images)
    assert torch.allclose(out, out_fast, atol=1e-5)
    out.sum().backward()
    out_fast.sum().backward()
    for a, b in zip(model.parameters(), fast.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-4)


@pytest.mark.parametrize("variant", ["CNN", "STN-C0", "STN-C1", "STN-SL1", "STN-DL1"])
def test_every_epoch_logs_the_st_alignment_on_the_val_set(splits, variant):
    """lr ≈ 0 keeps every ST at its identity start: slope exactly 0, pose SD = the spread of the val angles."""
    import math

    from trainables.data import DistortedStream, stream_seed
    from trainables.datasets import make_distortion
    from trainables.evaluate import EVAL_SEED

    result = train(small(variant=variant, lr=1e-30, epochs=2, train_size=256), splits=splits, evaluate_at_end=False)
    stream = DistortedStream(splits.val_x, splits.val_y, make_distortion("rotated-mnist"), 500, splits.train_x)
    angles, labels = zip(*[(p, y) for _, y, p in stream.batches(stream_seed(EVAL_SEED, "val"))], strict=True)
    angles, labels = torch.cat(angles).double(), torch.cat(labels)
    squares = sum(float(((angles[labels == c] - angles[labels == c].mean()) ** 2).sum()) for c in range(10))
    for record in result.history:
        assert 0.0 <= record["val_error"] <= 1.0
        if variant == "CNN":
            assert "val_pose_sd" not in record and "val_angle_slope" not in record
        else:
            assert record["val_angle_slope"] == pytest.approx(0.0, abs=1e-9)
            assert record["val_pose_sd"] == pytest.approx(math.sqrt(squares / len(angles)), rel=1e-5)


def test_bf16_autocast_trains_and_rejects_unknown_precisions(splits):
    result = train(small(precision="bf16", epochs=1, train_size=256), splits=splits, evaluate_at_end=False)
    assert result.status == "completed" and math.isfinite(result.history[0]["train_loss"])
    with pytest.raises(ConfigError, match="precision: 'fp16' is not allowed: allowed fp32, bf16"):
        small(precision="fp16").validate()


def test_warmup_ramps_linearly_then_milestones_divide(splits):
    """256 digits at batch 128 = 2 steps per epoch; 4 epochs = 8 steps, warm-up 2 epochs = 4 steps, ÷10 at 3/4 (step 6)."""
    lrs = []
    cfg = small(epochs=4, train_size=256, optimizer="sgd", lr=0.01, warmup_epochs=2, lr_milestones=(0.75,))
    train(cfg, on_epoch=lambda record, _: lrs.append(record["lr"]), splits=splits, evaluate_at_end=False)
    # the LR after each epoch's last step is the LR of the next step: steps 2, 4, 6, 8 -> 3/4, 1, 1/10, 1/10 of lr
    assert lrs == pytest.approx([0.0075, 0.01, 0.001, 0.001])
    with pytest.raises(ConfigError, match="warmup_epochs: must be a number between 0 and epochs"):
        small(warmup_epochs=5).validate()

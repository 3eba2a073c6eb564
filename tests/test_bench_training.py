"""``study.bench.training``: the training step it times is a real step, and its measurements are ratios of real runs."""

import pytest
import torch

from study.bench.training import deep_step, train_vs_bound, training_step
from trainables import metrics
from trainables.models import STNClassifier


def test_the_timed_step_is_one_optimiser_step_on_the_loops_loss():
    torch.manual_seed(0)
    model = STNClassifier("rotated-mnist", "CNN")
    images, labels = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    reference = STNClassifier("rotated-mnist", "CNN")
    reference.load_state_dict(model.state_dict())
    step = training_step(model, torch.optim.SGD(model.parameters(), lr=0.1))
    step(images, labels)
    metrics.classification_loss(reference(images), labels).backward()  # the same step by hand
    with torch.no_grad():
        for moved, (name, before) in zip(model.parameters(), reference.named_parameters(), strict=True):
            assert torch.allclose(moved, before - 0.1 * before.grad, atol=1e-6), name


@pytest.mark.slow  # a two-epoch training beside its compute bound
def test_train_vs_bound_reports_a_positive_ratio(splits):
    bound = train_vs_bound(splits, "CNN", epochs=2, train_size=256)
    assert bound["bound_img_s"] > 0 and 0 < bound["ratio"] < 10


@pytest.mark.slow  # builds every deeper network
def test_the_deeper_networks_step_is_measured_for_every_deep_dataset():
    from trainables.registry import DEEP_DATASETS

    rows = deep_step(variants=("CNN",), batch=2, steps=2)
    assert set(rows) == {f"{dataset}/CNN" for dataset in DEEP_DATASETS}
    for row in rows.values():
        assert row["step_img_s"] > 0 and row["data_img_s"] > 0 and 0 < row["data_share"] < 1

"""Every registered variant builds and trains; identity init, sharing and composition hold exactly."""

import pytest
import torch
from conftest import DEVICES

from trainables import st
from trainables.architectures import stack_param_count
from trainables.models import STNClassifier, count_parameters
from trainables.registry import ALL_DATASETS, DATASETS, VariantError, all_canonical, architecture, canonical_variants

BLOCK1 = 64 * 1 * 9 * 9 + 64  # Conv(1->64, 9x9)
BLOCK2 = 64 * 64 * 7 * 7 + 64  # Conv(64->64, 7x7)


def batch(model, n=2, seed=0):
    side = model.arch.input_side
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dataset,variant,st_transform", all_canonical())
def test_forward_backward(dataset, variant, st_transform):
    torch.manual_seed(0)
    model = STNClassifier(dataset, variant, st_transform)
    logits = model(batch(model))
    assert logits.shape == (2, 10)
    logits.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("dataset,variant,st_transform",
                         [c for c in all_canonical() if c[1] != "CNN"])
def test_identity_initialisation_is_a_no_op(dataset, variant, st_transform):
    """At init every ST is the identity: the output equals the plain classifier on the same input."""
    torch.manual_seed(0)
    model = STNClassifier(dataset, variant, st_transform).eval()
    x = batch(model)
    details = model.forward_details(x)
    assert torch.allclose(details.theta, st.identity(2), atol=1e-7)
    source = model.normalize(x) if model.spec.warps_input else model.classifier_features(x, model.spec.depth)
    expected = source if model.st_side == source.shape[-1] else torch.nn.functional.avg_pool2d(source, 2)
    assert torch.allclose(details.st_output, expected, atol=2e-4)  # float32 grid rounding on 112 px
    if model.st_side == source.shape[-1]:  # same sizes: the whole network is the plain classifier
        features = model.classifier_features(x, len(model.blocks))
        assert torch.allclose(details.logits, model.fc(features.flatten(1)), atol=1e-4)


@pytest.mark.parametrize("dataset,expected", [
    ("rotated-mnist", BLOCK1 + BLOCK2 + 64 * 2 * 2 * 10 + 10),
    ("translated-mnist", BLOCK1 + BLOCK2 + 64 * 10 * 10 * 10 + 10),
    ("scaled-mnist", BLOCK1 + BLOCK2 + 64 * 23 * 23 * 10 + 10),
])
def test_cnn_parameter_count_by_hand(dataset, expected):
    assert count_parameters(STNClassifier(dataset, "CNN")) == expected


@pytest.mark.parametrize("dataset", DATASETS)
def test_sharing_adds_no_parameters_and_copying_adds_the_copied_blocks(dataset):
    names = {v for v, t in canonical_variants(dataset) if t == "affine"}
    copied = {1: BLOCK1, 2: BLOCK1 + BLOCK2}
    for depth in (1, 2):
        if f"STN-SL{depth}" not in names:
            continue
        c, sl, dl = (count_parameters(STNClassifier(dataset, f"STN-{k}{depth}")) for k in ("C", "SL", "DL"))
        assert dl - sl == copied[depth]
        if dataset == "translated-mnist":
            # C1 warps the 26x26 map to 13x13 -> 3x3 after block 2; SL1 warps 60->30 -> 2x2 after block 2
            assert c - sl == 64 * (3 * 3 - 2 * 2) * 10
        else:
            assert c == sl


@pytest.mark.parametrize("dataset", DATASETS)
def test_localisation_head_count_by_hand(dataset):
    arch = architecture(dataset)
    model = STNClassifier(dataset, "STN-C0")
    head = stack_param_count(arch.head, 1, arch.input_side) + 20 * 6 + 6
    assert count_parameters(model.localisation) == head


def test_sl_localisation_reaches_the_shared_layers_and_dl_does_not():
    torch.manual_seed(0)
    for variant, shared in (("STN-SL1", True), ("STN-DL1", False)):
        model = STNClassifier("rotated-mnist", variant)
        torch.nn.init.normal_(model.localisation.params.weight, std=0.1)
        model.forward_details(batch(model)).theta.sum().backward()
        reached = model.blocks[0][0].weight.grad
        assert (reached is not None and reached.abs().sum() > 0) == shared
        if not shared:
            assert model.loc_trunk[0][0].weight.grad.abs().sum() > 0
            assert model.loc_trunk[0][0].weight is not model.blocks[0][0].weight


def test_iterations_compose_and_resample_the_original_once():
    model = STNClassifier("rotated-mnist", "STN-SL1x2")
    steps = [st.rotation_matrix(torch.tensor([30.0, -20.0])), st.rotation_matrix(torch.tensor([15.0, 40.0]))]
    seen = []

    def fake_localise(aligned):
        seen.append(aligned)
        return steps[len(seen) - 1]

    model._localise = fake_localise
    x = batch(model)
    details = model.forward_details(x)
    product = st.compose(steps[0], steps[1])
    assert torch.allclose(details.theta, product, atol=1e-6)
    source = model.normalize(x)
    assert torch.allclose(seen[1], st.warp(source, steps[0]), atol=1e-6)  # second look: currently aligned
    assert torch.allclose(details.st_output, st.warp(source, product), atol=1e-6)  # one resample of the original


def test_impossible_variant_is_rejected_before_torch():
    with pytest.raises(VariantError, match="allowed depths"):
        STNClassifier("rotated-mnist", "STN-C2")


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_every_available_device(device):
    model = STNClassifier("translated-mnist", "STN-SL1").to(device)
    logits = model(batch(model).to(device))
    logits.sum().backward()
    assert logits.device.type == device


@pytest.mark.parametrize("dataset,variant,st_transform", [  # the deeper networks' cells: the slow tier
    pytest.param(*cell, marks=[pytest.mark.slow] if cell[0] not in DATASETS else []) for cell in all_canonical(ALL_DATASETS)])
def test_every_parameter_gets_a_gradient(dataset, variant, st_transform):
    """timm's test_model_backward over the registry: no parameter is left out of the loss. The last
    localisation layer starts at zero (the identity), which stops the gradient into the head at the very
    first step by design: it is moved off zero first, as one step of training would."""
    torch.manual_seed(0)
    model = STNClassifier(dataset, variant, st_transform).train()
    if model.localisation is not None:
        with torch.no_grad():
            model.localisation.params.weight.normal_(0, 1e-3)
    side, channels = model.arch.input_side, model.arch.in_channels
    logits = model(torch.rand(2, channels, side, side, generator=torch.Generator().manual_seed(1)))
    logits.float().logsumexp(-1).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing

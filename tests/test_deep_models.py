"""The SVHN (32×32, 64×64 multi-digit) and PlanktonSet networks: depths from the map sizes, counts by hand,
identity init, training steps.

Each case builds one network of 5-30 M parameters, so the forward passes cover a representative set of
cells per dataset (shallow, deepest, shared, copied, iterated); every canonical cell is checked by the
registry's shape arithmetic and built once.
"""

import pytest
import torch

from trainables import st
from trainables.datasets import MNIST, dataset_names
from trainables.models import STNClassifier, count_parameters
from trainables.registry import (
    CORE_VARIANTS,
    DEEP_DATASETS,
    VariantError,
    all_canonical,
    allowed_depths,
    canonical_variants,
    check_variant,
)


def conv(c_in, c_out, k):
    return c_out * c_in * k * k + c_out


def fc(n_in, n_out):
    return n_out * n_in + n_out


SVHN_WIDTHS = (3, 48, 64, 128, 160, 192, 192, 192, 192)
SVHN_BLOCK = [conv(a, b, 5) for a, b in zip(SVHN_WIDTHS, SVHN_WIDTHS[1:], strict=False)]
SVHN_SIDES = (32, 16, 16, 8, 8, 4, 4, 2, 2)  # input, then after each block: 2x2 pools after conv 1, 3, 5, 7
MULTI_SIDES = (64, 32, 32, 16, 16, 8, 8, 4, 4)  # the same blocks on the 64x64 multi-digit crops
PLANKTON_WIDTHS = (1, 32, 32, 64, 64, 128, 128, 128, 256, 256, 256)
PLANKTON_BLOCK = [conv(a, b, 3) for a, b in zip(PLANKTON_WIDTHS, PLANKTON_WIDTHS[1:], strict=False)]
PLANKTON_SIDES = (95, 95, 47, 47, 23, 23, 23, 11, 11, 11, 5)  # 3x3/2 pools after conv 2, 4, 7, 10

CNN = {
    # 8 convs, FC 2x2x192 -> 3072 -> 3072 -> 3072, output 3072 -> 10
    "svhn": sum(SVHN_BLOCK) + fc(2 * 2 * 192, 3072) + 2 * fc(3072, 3072) + fc(3072, 10),
    # 10 convs, FC 5x5x256 -> 512 -> 512, output 512 -> 121
    "plankton": sum(PLANKTON_BLOCK) + fc(5 * 5 * 256, 512) + fc(512, 512) + fc(512, 121),
    # the same convs, FC 4x4x192 -> 3072 -> 3072 -> 3072, five output heads 3072 -> 11
    "svhn-multi": sum(SVHN_BLOCK) + fc(4 * 4 * 192, 3072) + 2 * fc(3072, 3072) + 5 * fc(3072, 11),
}
BLOCKS = {"svhn": SVHN_BLOCK, "svhn-multi": SVHN_BLOCK, "plankton": PLANKTON_BLOCK}
OUTPUT = {"svhn": (10,), "svhn-multi": (5, 11), "plankton": (121,)}  # logits per image
STUDIED = {"svhn": (2, 4, 6, 8), "svhn-multi": (2, 4, 6, 8), "plankton": (2, 4, 7, 10)}


def head(dataset, depth):
    """Localisation head + the 32 -> 6 parameter layer, by hand, for the depth-``depth`` map."""
    widths, sides = {"svhn": (SVHN_WIDTHS, SVHN_SIDES), "svhn-multi": (SVHN_WIDTHS, MULTI_SIDES),
                     "plankton": (PLANKTON_WIDTHS, PLANKTON_SIDES)}[dataset]
    c, s = widths[depth], sides[depth]
    if dataset != "plankton":  # conv 32 5x5 same, 2x2 pool, conv 32 5x5 same, FC 32, FC 32
        convs, side = conv(c, 32, 5) + conv(32, 32, 5), s // 2
    else:  # conv 32 3x3 same, [3x3/2 pool], conv 32 3x3 same, [3x3/2 pool]: pools only on maps wider than 11
        convs, side = conv(c, 32, 3) + conv(32, 32, 3), s if s <= 11 else ((s - 3) // 2 + 1 - 3) // 2 + 1
    return convs + fc(32 * side * side, 32) + fc(32, 32) + fc(32, 6)


def images(model, n=2, seed=0):
    arch = model.arch
    return torch.rand(n, arch.in_channels, arch.input_side, arch.input_side,
                      generator=torch.Generator().manual_seed(seed))


def test_allowed_depths_follow_the_map_sizes():
    assert allowed_depths("svhn", "none") == list(range(9))  # "same" convolutions: every map, down to 2x2
    assert allowed_depths("svhn", "shared") == list(range(1, 9))
    assert allowed_depths("svhn-multi", "none") == list(range(9))  # 64x64: every map, down to 4x4
    assert allowed_depths("plankton", "none") == list(range(11))  # the head's pools skip the 11x11 and 5x5 maps
    assert {2, 4, 7, 10} <= set(allowed_depths("plankton", "copy"))


@pytest.mark.parametrize("dataset", DEEP_DATASETS)
def test_canonical_cells_are_valid_and_studied(dataset):
    cells = canonical_variants(dataset)
    names = {v for v, t in cells if t == "affine"}
    assert set(CORE_VARIANTS) <= names and len(cells) == len(set(cells))
    depths = STUDIED[dataset]
    assert {f"STN-{k}{d}" for k in ("C", "SL", "DL") for d in depths} <= names
    for variant, st_transform in cells:
        assert check_variant(dataset, variant, st_transform).name == variant
    assert all_canonical() == all_canonical(dataset_names(MNIST))  # the default stays the MNIST family


def test_the_datasets_are_named_in_one_line_errors():
    with pytest.raises(VariantError, match="allowed rotated-mnist, translated-mnist, scaled-mnist, rotated360-mnist, svhn, plankton"):
        check_variant("cifar", "CNN")
    with pytest.raises(VariantError, match="allowed depths for STN-C<X>: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"):
        check_variant("plankton", "STN-C11")


@pytest.mark.parametrize("dataset", DEEP_DATASETS)
def test_parameter_counts_by_hand(dataset):
    blocks = BLOCKS[dataset]
    deepest = len(blocks)
    assert count_parameters(STNClassifier(dataset, "CNN")) == CNN[dataset]
    for depth in (0, 2, deepest):
        model = STNClassifier(dataset, f"STN-C{depth}")
        assert count_parameters(model.localisation) == head(dataset, depth)
        assert count_parameters(model) == CNN[dataset] + head(dataset, depth)  # the ST keeps every map size
    for depth in (2, deepest):
        sl, dl = (count_parameters(STNClassifier(dataset, f"STN-{k}{depth}")) for k in ("SL", "DL"))
        assert sl == CNN[dataset] + head(dataset, depth)  # sharing adds nothing over C
        assert dl - sl == sum(blocks[:depth])  # copying adds the first X blocks


def _cells(dataset):
    deepest = len(BLOCKS[dataset])
    return [(dataset, v) for v in ("STN-C0", "STN-C0x2", f"STN-C{deepest}", "STN-SL4", "STN-DL2", "STN-SL2x2")]


@pytest.mark.parametrize("dataset,variant", [(d, v) for d in DEEP_DATASETS for v in ("STN-DL2", "STN-SL2x2")])
def test_forward_backward(dataset, variant):
    torch.manual_seed(0)
    model = STNClassifier(dataset, variant)
    logits = model(images(model, n=1))
    assert logits.shape == (1, *OUTPUT[dataset])
    logits.logsumexp(-1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("dataset,variant", [c for d in DEEP_DATASETS for c in _cells(d)])
def test_identity_initialisation_is_a_no_op(dataset, variant):
    """At init the ST is the identity: its output is its input, the logits the plain classifier's (eval: no dropout)."""
    torch.manual_seed(0)
    model = STNClassifier(dataset, variant).eval()
    x = images(model)
    with torch.no_grad():
        details = model.forward_details(x)
        assert torch.allclose(details.theta, st.identity(2), atol=1e-7)
        source = model.normalize(x) if model.spec.warps_input else model.classifier_features(x, model.spec.depth)
        assert details.st_output.shape == source.shape
        assert torch.allclose(details.st_output, source, atol=1e-4)
        plain = model.classify(model.classifier_features(x, len(model.blocks)))
        assert torch.allclose(details.logits, plain, atol=1e-4)


def test_colour_input_is_normalised_per_channel():
    model = STNClassifier("svhn", "CNN")
    x = torch.ones(1, 3, 32, 32) * torch.tensor([0.4377, 0.4438, 0.4728]).view(1, 3, 1, 1)
    assert model.normalize(x).abs().max() < 1e-6

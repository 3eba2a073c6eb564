"""``trainables.architectures``: the shape arithmetic the registry trusts is what torch computes on a real forward
pass, and the hand formulas (valid conv, 2×2 and 3×3/2 pools, the conditional layers) hold layer by layer."""

import pytest
import torch

from trainables.architectures import (
    ShapeError,
    layer_output,
    map_after_blocks,
    st_output_side,
    stack_output,
    stride_after_blocks,
)
from trainables.models import build_stack
from trainables.registry import ALL_DATASETS, architecture


def forward_shape(layers, channels, side):
    with torch.no_grad():
        out = build_stack(layers, channels, side).eval()(torch.zeros(1, channels, side, side))
    return (out.shape[1], 1) if out.dim() == 2 else (out.shape[1], out.shape[2])


def test_each_layer_by_hand():
    assert layer_output(("conv", 64, 9), 1, 28, 28) == (64, 20)  # valid: 28 − 9 + 1
    assert layer_output(("conv_same", 32, 5), 3, 13, 13) == (32, 13)
    assert layer_output(("pool",), 64, 21, 21) == (64, 10)  # floor(21 / 2)
    assert layer_output(("pool3",), 32, 95, 95) == (32, 47)  # (95 − 3) // 2 + 1
    assert layer_output(("pool_if_map_gt", 20), 20, 24, 28) == (20, 12)  # the map reaching it is wider than 20
    assert layer_output(("pool_if_map_gt", 20), 20, 20, 112) == (20, 20)
    assert layer_output(("pool3_if_gt", 11), 32, 11, 11) == (32, 11)  # the stack's input is not wider than 11
    assert layer_output(("down2_if_eq", 112), 1, 112, 112) == (1, 56)
    assert layer_output(("fc", 20), 20, 4, 4) == (20, 1) and layer_output(("dropout", 0.5), 7, 9, 9) == (7, 9)
    with pytest.raises(ShapeError, match="a 5x5 convolution needs a map of side >= 5, got 4"):
        layer_output(("conv", 20, 5), 20, 4, 4)
    with pytest.raises(ShapeError, match="3x3 max-pool needs a map of side >= 3, got 2"):
        layer_output(("pool3",), 20, 2, 2)


@pytest.mark.parametrize("dataset", sorted(ALL_DATASETS))
def test_the_classifier_maps_after_each_block_are_those_of_a_real_forward_pass(dataset):
    arch = architecture(dataset)
    features = torch.zeros(1, arch.in_channels, arch.input_side, arch.input_side)
    stack = [build_stack(block, *map_after_blocks(arch, i)) for i, block in enumerate(arch.classifier_blocks)]
    with torch.no_grad():
        for depth, block in enumerate(stack, start=1):
            features = block.eval()(features)
            assert (features.shape[1], features.shape[2]) == map_after_blocks(arch, depth), depth
            assert features.shape[2] == features.shape[3]
    assert map_after_blocks(arch, 0) == (arch.in_channels, arch.input_side)


@pytest.mark.parametrize("dataset", sorted(ALL_DATASETS))
def test_each_depths_localisation_head_computes_what_stack_output_says(dataset):
    arch = architecture(dataset)
    for depth in range(len(arch.classifier_blocks) + 1):
        channels, side = map_after_blocks(arch, depth)
        try:
            expected = stack_output(arch.head, channels, side)
        except ShapeError:
            continue  # a depth the head cannot take: the registry rejects it before torch
        assert forward_shape(arch.head, channels, side) == expected == (arch.head[-1][1], 1), depth


def test_strides_and_the_st_output_side():
    mnist, plankton = architecture("rotated-mnist"), architecture("plankton")
    assert [stride_after_blocks(mnist, d) for d in range(3)] == [1, 2, 4]
    assert [stride_after_blocks(plankton, d) for d in (0, 2, 4, 7, 10)] == [1, 2, 4, 8, 16]  # 3×3/2 pools move 2 px too
    assert st_output_side(architecture("translated-mnist"), 60) == 30 and st_output_side(mnist, 28) == 28
    assert st_output_side(architecture("translated-mnist"), 1) == 1

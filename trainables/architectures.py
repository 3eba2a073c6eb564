"""Layer specifications of the classifiers and localisation heads, as plain data.

The same spec drives three things: the torch modules (``models``), the shape arithmetic that lets
the registry reject an impossible variant with a one-line message *before* torch sees a tensor,
and the parameter counts the tests check against hand arithmetic. Networks follow the authors'
code: the MNIST family here, and the deeper SVHN (32×32 crops and the 64×64 multi-digit form) and
PlanktonSet networks of the ICPR study (their ``studied_depths`` pick the rows a study draws; every
depth whose map the head can take stays buildable).
"""

from __future__ import annotations

from dataclasses import dataclass

# A layer is a tuple: ("conv", out_channels, kernel) (valid) | ("conv_same", out_channels, kernel) (zero
# padding kernel // 2, side kept) | ("pool",) (2×2) | ("pool_if_map_gt", side) | ("pool3",) (3×3, stride 2,
# the plankton net's overlapping pool) | ("pool3_if_gt", side) | ("relu",) | ("lrelu",) (slope 1/3)
# | ("dropout", p) | ("down2",) (×0.5 area downsample) | ("down2_if_eq", side) | ("fc", width) and
# ("fc_lrelu", width) (flatten, linear, then ReLU / leaky ReLU). A conditional layer applies when the
# stack's *input* side satisfies it, so one head serves every depth — except ("pool_if_map_gt", side),
# which tests the map that reaches it (the authors' translated head decides after its second conv).
Layer = tuple
LEAKY_SLOPE = 1 / 3  # the plankton network's leaky ReLU (authors' code)


@dataclass(frozen=True, kw_only=True)
class Network:
    """The layers of one dataset's networks: classifier blocks, localisation head and top.

    The image facts the layers run on (side, channels, classes, normalisation) belong to the dataset's
    spec (``trainables.datasets``), which binds a network to them as an ``Architecture``.
    """

    classifier_blocks: tuple[tuple[Layer, ...], ...]
    head: tuple[Layer, ...]
    st_output_scale: float = 1.0  # 0.5 on translated MNIST: the ST output is downsampled ×2
    padding_mode: str = "border"  # grid_sample padding of the ST: border for the MNIST family
    top: tuple[Layer, ...] = ()  # layers between the last block and the final linear layer (FC, dropout)
    studied_depths: tuple[int, ...] | None = None  # the deeper rows a study draws (None: every allowed depth)


@dataclass(frozen=True, kw_only=True)
class Architecture(Network):
    """A network bound to its dataset's images: what the models and the shape arithmetic read."""

    dataset: str
    input_side: int
    in_channels: int = 1
    num_classes: int = 10
    positions: int = 1  # labels per image: the multi-digit SVHN net has 5 output heads of num_classes each
    norm_mean: float | tuple[float, ...] = 0.0  # a tuple: one value per input channel
    norm_std: float | tuple[float, ...] = 1.0


class ShapeError(ValueError):
    """A layer cannot take the map it is given."""


_MNIST_BLOCKS = (
    (("conv", 64, 9), ("pool",), ("relu",)),
    (("conv", 64, 7), ("pool",), ("relu",)),
)

ROTATED_MNIST = Network(
    classifier_blocks=_MNIST_BLOCKS,
    # authors' CNN_middleloc: pool when the map after conv 1 is wider than 20 (depth 0: 24 -> 12; depth 1: 6)
    head=(("conv", 20, 5), ("pool_if_map_gt", 20), ("relu",), ("conv", 20, 5), ("relu",), ("fc", 20)),
)
TRANSLATED_MNIST = Network(
    classifier_blocks=_MNIST_BLOCKS,
    st_output_scale=0.5,
    head=(
        # authors' CNN_translate: the second pool applies when the map after conv 2 is wider than 20,
        # i.e. at depth 0 (24 -> 12) and not at depth 1 (7 stays 7)
        ("conv", 20, 5), ("pool",), ("relu",), ("conv", 20, 5), ("relu",),
        ("pool_if_map_gt", 20), ("fc", 20),
    ),
)
SCALED_MNIST = Network(
    classifier_blocks=_MNIST_BLOCKS,
    # the authors' scaled head halves the 112 canvas before its first conv
    head=(
        ("down2_if_eq", 112), ("conv", 20, 5), ("pool",), ("relu",), ("conv", 20, 5), ("pool",),
        ("relu",), ("fc", 20),
    ),
)


def _block(conv: Layer, activation: str, pool: Layer | None = None, dropout: float = 0.0) -> tuple[Layer, ...]:
    """conv -> activation [-> pool] [-> dropout], the authors' order."""
    layers = [conv, (activation,)]
    if pool is not None:
        layers.append(pool)
    if dropout:
        layers.append(("dropout", dropout))
    return tuple(layers)


# SVHN (authors' SVHN_CNN): 8 conv 5×5 "same", ReLU, 2×2 pool after conv 1, 3, 5, 7, dropout 0.5 after
# every conv but the first; 3 FC 3072. On torchvision's 32×32 crops the blocks leave 16,16,8,8,4,4,2,2;
# on the 64×64 multi-digit crops 32,32,16,16,8,8,4,4 (the FC top then reads 4×4×192 = 3072 values).
_SVHN_BLOCKS = tuple(
    _block(("conv_same", width, 5), "relu", ("pool",) if index % 2 == 0 else None, 0.5 if index else 0.0)
    for index, width in enumerate((48, 64, 128, 160, 192, 192, 192, 192))
)
_SVHN_TOP = (("fc", 3072), ("dropout", 0.5)) * 3
# Localisation (authors' SVHN_large): conv 32, pool, conv 32, FC 32, FC 32. With "same" convolutions it
# takes every depth's map, down to the 2×2 map after block 7.
_SVHN_HEAD = (("conv_same", 32, 5), ("relu",), ("pool",), ("conv_same", 32, 5), ("relu",), ("fc", 32), ("fc", 32))

# PlanktonSet (authors' plankton_CNN): 10 conv 3×3 "same" with leaky ReLU, 3×3/2 pools after conv
# 2, 4, 7, 10 (95 -> 47 -> 23 -> 11 -> 5), then dropout + 2 FC 512 (leaky), dropout before the output.
_PLANKTON_BLOCKS = tuple(
    _block(("conv_same", width, 3), "lrelu", ("pool3",) if index in (1, 3, 6, 9) else None)
    for index, width in enumerate((32, 32, 64, 64, 128, 128, 128, 256, 256, 256))
)
_PLANKTON_TOP = (("dropout", 0.5), ("fc_lrelu", 512), ("dropout", 0.5), ("fc_lrelu", 512), ("dropout", 0.5))
# Localisation (authors' plankton_large: conv 32, pool, conv 32, pool, FC 32, FC 32). The pools apply
# only to maps wider than 11 (our choice), so the same head takes the 95/47/23 maps and the 11×11 and
# 5×5 maps of depths 7 and 10, where two 3×3/2 pools would leave nothing.
_PLANKTON_HEAD = (
    ("conv_same", 32, 3), ("relu",), ("pool3_if_gt", 11), ("conv_same", 32, 3), ("relu",), ("pool3_if_gt", 11),
    ("fc", 32), ("fc", 32),
)

# SVHN (authors' SVHN_CNN), on the 32×32 crops and the 64×64 multi-digit crops alike (studied depths:
# the last block at each map size, our choice).
SVHN = Network(
    classifier_blocks=_SVHN_BLOCKS,
    head=_SVHN_HEAD,
    padding_mode="zeros",  # authors' code: zeros for SVHN
    top=_SVHN_TOP,
    studied_depths=(2, 4, 6, 8),
)
PLANKTON = Network(
    classifier_blocks=_PLANKTON_BLOCKS,
    head=_PLANKTON_HEAD,
    padding_mode="border",  # authors' code: border for plankton
    top=_PLANKTON_TOP,
    studied_depths=(2, 4, 7, 10),  # the depths of the ICPR study (Finnveden et al., the deeper networks)
)


def layer_output(layer: Layer, channels: int, side: int, input_side: int) -> tuple[int, int]:
    """(channels, side) after ``layer``; ``input_side`` is the side the enclosing stack started at."""
    kind = layer[0]
    if kind == "conv":
        _, out_channels, kernel = layer
        if side < kernel:
            raise ShapeError(f"a {kernel}x{kernel} convolution needs a map of side >= {kernel}, got {side}")
        return out_channels, side - kernel + 1
    if kind == "conv_same":
        return layer[1], side
    if kind == "pool" or (kind == "pool_if_map_gt" and side > layer[1]):
        if side < 2:
            raise ShapeError(f"a 2x2 max-pool needs a map of side >= 2, got {side}")
        return channels, side // 2
    if kind == "pool3" or (kind == "pool3_if_gt" and input_side > layer[1]):
        if side < 3:
            raise ShapeError(f"a 3x3 max-pool needs a map of side >= 3, got {side}")
        return channels, (side - 3) // 2 + 1
    if kind == "down2" or (kind == "down2_if_eq" and input_side == layer[1]):
        return channels, side // 2
    if kind in ("fc", "fc_lrelu"):
        return layer[1], 1
    return channels, side  # relu, lrelu, dropout, or a conditional layer that does not apply


def stack_output(layers, channels: int, side: int) -> tuple[int, int]:
    """(channels, side) after a whole stack of layers; ``fc`` leaves side 1."""
    input_side = side
    for layer in layers:
        channels, side = layer_output(layer, channels, side, input_side)
    return channels, side


def stack_param_count(layers, channels: int, side: int) -> int:
    """Number of weights + biases of a stack, by hand arithmetic (no torch)."""
    total, input_side = 0, side
    for layer in layers:
        if layer[0] in ("conv", "conv_same"):
            total += layer[1] * channels * layer[2] ** 2 + layer[1]
        elif layer[0] in ("fc", "fc_lrelu"):
            total += layer[1] * channels * side * side + layer[1]
        channels, side = layer_output(layer, channels, side, input_side)
    return total


def st_output_side(arch: Architecture, side: int) -> int:
    """Side of the ST's output for a map of ``side`` (×2 downsampled on translated MNIST)."""
    return max(1, int(round(side * arch.st_output_scale)))


def stride_after_blocks(arch: Architecture, depth: int) -> int:
    """Input pixels between neighbouring cells of the depth-``depth`` map (every pool halves the side)."""
    pools = ("pool", "pool3")  # 3x3/2 without padding also moves 2 px per cell
    return 2 ** sum(1 for block in arch.classifier_blocks[:depth] for layer in block if layer[0] in pools)


def map_after_blocks(arch: Architecture, depth: int, side: int | None = None) -> tuple[int, int]:
    """(channels, side) of the classifier's map after its first ``depth`` blocks."""
    channels, side = arch.in_channels, arch.input_side if side is None else side
    for block in arch.classifier_blocks[:depth]:
        channels, side = stack_output(block, channels, side)
    return channels, side

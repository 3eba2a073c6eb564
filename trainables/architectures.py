"""Layer specifications of the classifiers and localisation heads, as plain data.

The same spec drives three things: the torch modules (``models``), the shape arithmetic that lets
the registry reject an impossible variant with a one-line message *before* torch sees a tensor,
and the parameter counts the tests check against hand arithmetic. Networks follow the authors'
code (paper-notes §3).
"""

from __future__ import annotations

from dataclasses import dataclass

# A layer is a tuple: ("conv", out_channels, kernel) | ("pool",) | ("pool_if_gt", side) | ("relu",)
# | ("down2",) (×0.5 area downsample) | ("down2_if_eq", side) | ("fc", width) (flatten first).
Layer = tuple


@dataclass(frozen=True)
class Architecture:
    """The classifier blocks and the localisation head of one dataset family."""

    dataset: str
    input_side: int
    st_output_scale: float  # 0.5 on translated MNIST: the ST output is downsampled ×2
    classifier_blocks: tuple[tuple[Layer, ...], ...]
    head: tuple[Layer, ...]
    num_classes: int = 10
    norm_mean: float = 0.0
    norm_std: float = 1.0
    padding_mode: str = "border"  # grid_sample padding of the ST: border for the MNIST family


class ShapeError(ValueError):
    """A layer cannot take the map it is given."""


_MNIST_BLOCKS = (
    (("conv", 64, 9), ("pool",), ("relu",)),
    (("conv", 64, 7), ("pool",), ("relu",)),
)

ARCHITECTURES: dict[str, Architecture] = {
    "rotated-mnist": Architecture(
        dataset="rotated-mnist",
        input_side=28,
        st_output_scale=1.0,
        classifier_blocks=_MNIST_BLOCKS,
        head=(("conv", 20, 5), ("pool_if_gt", 20), ("relu",), ("conv", 20, 5), ("relu",), ("fc", 20)),
        norm_mean=0.1307,
        norm_std=0.3081,
    ),
    "translated-mnist": Architecture(
        dataset="translated-mnist",
        input_side=60,
        st_output_scale=0.5,
        classifier_blocks=_MNIST_BLOCKS,
        head=(
            ("conv", 20, 5), ("pool",), ("relu",), ("conv", 20, 5), ("relu",),
            ("pool_if_gt", 20), ("fc", 20),
        ),
        norm_mean=0.0363,
        norm_std=0.1870,
    ),
    "scaled-mnist": Architecture(
        dataset="scaled-mnist",
        input_side=112,
        st_output_scale=1.0,
        classifier_blocks=_MNIST_BLOCKS,
        head=(
            ("down2_if_eq", 112), ("conv", 20, 5), ("pool",), ("relu",), ("conv", 20, 5), ("pool",),
            ("relu",), ("fc", 20),
        ),
        norm_mean=0.0414,
        norm_std=0.1751,
    ),
}


def layer_output(layer: Layer, channels: int, side: int, input_side: int) -> tuple[int, int]:
    """(channels, side) after ``layer``; ``input_side`` is the side the enclosing stack started at."""
    kind = layer[0]
    if kind == "conv":
        _, out_channels, kernel = layer
        if side < kernel:
            raise ShapeError(f"a {kernel}x{kernel} convolution needs a map of side >= {kernel}, got {side}")
        return out_channels, side - kernel + 1
    if kind == "pool" or (kind == "pool_if_gt" and input_side > layer[1]):
        if side < 2:
            raise ShapeError(f"a 2x2 max-pool needs a map of side >= 2, got {side}")
        return channels, side // 2
    if kind == "down2" or (kind == "down2_if_eq" and input_side == layer[1]):
        return channels, side // 2
    if kind == "fc":
        return layer[1], 1
    return channels, side  # relu, or a conditional layer that does not apply


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
        if layer[0] == "conv":
            total += layer[1] * channels * layer[2] ** 2 + layer[1]
        elif layer[0] == "fc":
            total += layer[1] * channels * side * side + layer[1]
        channels, side = layer_output(layer, channels, side, input_side)
    return total


def st_output_side(arch: Architecture, side: int) -> int:
    """Side of the ST's output for a map of ``side`` (×2 downsampled on translated MNIST)."""
    return max(1, int(round(side * arch.st_output_scale)))


def map_after_blocks(arch: Architecture, depth: int, side: int | None = None) -> tuple[int, int]:
    """(channels, side) of the classifier's map after its first ``depth`` blocks."""
    channels, side = 1, arch.input_side if side is None else side
    for block in arch.classifier_blocks[:depth]:
        channels, side = stack_output(block, channels, side)
    return channels, side

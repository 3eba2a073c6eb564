"""Classifier, localisation network and their composition into CNN / STN-CX / STN-SLX / STN-DLX.

One class, ``STNClassifier``, builds every registered variant from the layer specs of
``architectures``: the ST sits after the first X classifier blocks (CX), or warps the input while
the localisation trunk is the classifier's own first X blocks (SLX) or a fresh copy of them (DLX).
Iterations compose the matrices and resample the original source once (as in the authors' code).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from trainables import st
from trainables.architectures import (
    LEAKY_SLOPE,
    layer_output,
    map_after_blocks,
    st_output_side,
    stack_output,
    stride_after_blocks,
)
from trainables.registry import ST_TRANSFORMS, architecture, check_variant


def build_stack(layers, channels: int, side: int) -> nn.Sequential:
    """Torch modules for a layer spec starting from a (channels, side) map."""
    modules, input_side = [], side
    for layer in layers:
        kind = layer[0]
        if kind == "conv":
            modules.append(nn.Conv2d(channels, layer[1], layer[2]))
        elif kind == "conv_same":
            modules.append(nn.Conv2d(channels, layer[1], layer[2], padding=layer[2] // 2))
        elif kind == "pool" or (kind == "pool_if_map_gt" and side > layer[1]):
            modules.append(nn.MaxPool2d(2))
        elif kind == "pool3" or (kind == "pool3_if_gt" and input_side > layer[1]):
            modules.append(nn.MaxPool2d(3, stride=2))
        elif kind == "down2" or (kind == "down2_if_eq" and input_side == layer[1]):
            modules.append(nn.AvgPool2d(2))
        elif kind == "relu":
            modules.append(nn.ReLU())
        elif kind == "lrelu":
            modules.append(nn.LeakyReLU(LEAKY_SLOPE))
        elif kind == "dropout":
            modules.append(nn.Dropout(layer[1]))
        elif kind in ("fc", "fc_lrelu"):
            activation = nn.ReLU() if kind == "fc" else nn.LeakyReLU(LEAKY_SLOPE)
            modules += [nn.Flatten(), nn.Linear(channels * side * side, layer[1]), activation]
        channels, side = layer_output(layer, channels, side, input_side)
    return nn.Sequential(*modules)


class Localisation(nn.Module):
    """Head + a zero-initialised parameter layer, plus the identity transform from a fixed buffer.

    The identity is not the layer's bias (as in the authors' code): with weight decay a decayed bias
    would pull θ towards the zero transform, a decayed weight and bias pull it towards the identity.
    """

    def __init__(self, head_layers, channels: int, side: int, st_transform: str):
        super().__init__()
        self.st_transform = st_transform
        self.head = build_stack(head_layers, channels, side)
        width, _ = stack_output(head_layers, channels, side)
        self.params = nn.Linear(width, ST_TRANSFORMS[st_transform])
        nn.init.zeros_(self.params.weight)
        nn.init.zeros_(self.params.bias)
        self.register_buffer("identity", torch.tensor(st.IDENTITY_PARAMS[st_transform]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return st.params_to_matrix(self.st_transform, self.params(self.head(features)) + self.identity)


@dataclass
class Details:
    """Everything a forward pass exposes to the metrics and figures."""

    logits: torch.Tensor
    thetas: list[torch.Tensor] = field(default_factory=list)  # per iteration; thetas[0] = first output
    theta: torch.Tensor | None = None  # composed transform actually applied
    st_output: torch.Tensor | None = None  # warped image (C0/SL/DL) or warped feature map (CX)
    aligned_features: torch.Tensor | None = None  # depth-X map that enters the post-ST blocks


def _norm_buffer(value) -> torch.Tensor:
    """A scalar for one value (the MNIST checkpoints' shape), else (C, 1, 1) to broadcast per channel."""
    tensor = torch.tensor(value)
    return tensor if tensor.ndim == 0 else tensor.view(-1, 1, 1)


class STNClassifier(nn.Module):
    """Any registered variant on any registered dataset; takes raw images (B, C, S, S) in [0, 1]."""

    def __init__(self, dataset: str, variant="CNN", st_transform: str = "affine"):
        super().__init__()
        self.spec = check_variant(dataset, variant, st_transform)
        self.dataset, self.st_transform = dataset, st_transform
        self.arch = arch = architecture(dataset)
        self.register_buffer("mean", _norm_buffer(arch.norm_mean))
        self.register_buffer("std", _norm_buffer(arch.norm_std))
        depth = self.spec.depth
        blocks_side = arch.input_side
        if depth is not None:
            if self.spec.warps_input:
                blocks_side = st_output_side(arch, arch.input_side)
            self.source_shape = map_after_blocks(arch, depth)  # (channels, side) the ST warps or reads
            self.st_side = st_output_side(arch, self.source_shape[1] if not self.spec.warps_input else arch.input_side)
        self.blocks = nn.ModuleList()
        channels, side = arch.in_channels, blocks_side
        for index, block in enumerate(arch.classifier_blocks):
            if depth is not None and not self.spec.warps_input and index == depth:
                channels, side = self.source_shape[0], self.st_side
            self.blocks.append(build_stack(block, channels, side))
            channels, side = stack_output(block, channels, side)
        self.top = build_stack(arch.top, channels, side)  # empty for the MNIST family
        width, side = stack_output(arch.top, channels, side)
        self.fc = nn.Linear(width * side * side, arch.num_classes * arch.positions)  # P heads as one layer
        self.localisation = None
        self.loc_trunk = None
        if depth is not None:
            loc_channels, loc_side = map_after_blocks(arch, depth)
            self.localisation = Localisation(arch.head, loc_channels, loc_side, st_transform)
            if self.spec.sharing == "copy":
                trunk, c, s = [], arch.in_channels, arch.input_side
                for block in arch.classifier_blocks[:depth]:
                    trunk.append(build_stack(block, c, s))
                    c, s = stack_output(block, c, s)
                self.loc_trunk = nn.Sequential(*trunk)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def warped_extent(self) -> int:
        """Input pixels that the map the ST warps spans: the unit of a translation pose in pixels.

        θ's shift is in the warped map's normalised units (the map spans [-1, 1]); an input warp spans
        the canvas, STN-CX's depth-X map spans its side × its stride (52 px for translated STN-C1:
        the 26-wide map at stride 2). A fixed 60 would make C1's shifts look 15 % larger than they are.
        """
        if self.spec.depth is None or self.spec.warps_input:
            return self.arch.input_side
        return self.source_shape[1] * stride_after_blocks(self.arch, self.spec.depth)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def classifier_features(self, images: torch.Tensor, depth: int) -> torch.Tensor:
        """The plain classifier's depth-``depth`` map of raw images (no ST): Eq. 1's Γ."""
        x = self.normalize(images)
        for block in self.blocks[:depth]:
            x = block(x)
        return x

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) from the last block's map — (N, positions, classes) for a multi-label net."""
        logits = self.fc(self.top(features).flatten(1))
        if self.arch.positions > 1:
            return logits.view(len(logits), self.arch.positions, self.arch.num_classes)
        return logits

    def _localise(self, source: torch.Tensor) -> torch.Tensor:
        if self.spec.sharing == "shared":
            for block in self.blocks[: self.spec.depth]:
                source = block(source)
        elif self.spec.sharing == "copy":
            source = self.loc_trunk(source)
        return self.localisation(source)

    def _st_source(self, images: torch.Tensor) -> torch.Tensor:
        """What the ST warps: the normalised image, or the depth-X map for STN-CX."""
        x = self.normalize(images)
        if not self.spec.warps_input:
            for block in self.blocks[: self.spec.depth]:
                x = block(x)
        return x

    def _thetas(self, source: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each iteration's θ and their composition; a later iteration reads the source aligned so far."""
        aligned, thetas, theta = source, [], None
        for _ in range(self.spec.iterations):
            step = self._localise(aligned)
            thetas.append(step)
            theta = step if theta is None else st.compose(theta, step)
            if len(thetas) < self.spec.iterations:  # intermediate alignment at the source resolution
                aligned = st.warp(source, theta, None, self.arch.padding_mode)
        return thetas, theta

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """The composed θ the ST applies to ``images``, without classifying them (half a forward pass or less)."""
        return self._thetas(self._st_source(images))[1]

    def forward_details(self, images: torch.Tensor, theta: torch.Tensor | None = None) -> Details:
        """Forward pass with its intermediates; a given ``theta`` replaces the localisation (oracles, figures)."""
        if self.spec.depth is None:
            x = self.normalize(images)
            for block in self.blocks:
                x = block(x)
            return Details(logits=self.classify(x))
        depth, pad = self.spec.depth, self.arch.padding_mode
        source = self._st_source(images)
        thetas, theta = self._thetas(source) if theta is None else ([theta], theta)
        out = st.warp(source, theta, self.st_side, pad)
        features = out
        if self.spec.warps_input:
            for block in self.blocks[:depth]:
                features = block(features)
        x = features
        for block in self.blocks[depth:]:
            x = block(x)
        return Details(self.classify(x), thetas, theta, out, features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_details(images).logits

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters split into localisation / pre-ST classifier layers / the rest (for LR multipliers).

        ``pre_st`` holds the classifier blocks that feed the ST: the warped map's blocks in STN-CX and
        the shared blocks in STN-SLX. STN-DLX's classifier blocks all run after the ST (its
        localisation reads a copy), so they take the base LR, as in the authors' code.
        """
        loc = list(self.localisation.parameters()) if self.localisation else []
        if self.loc_trunk is not None:
            loc += list(self.loc_trunk.parameters())
        depth = 0 if self.spec.sharing == "copy" else (self.spec.depth or 0)
        pre = [p for block in self.blocks[:depth] for p in block.parameters()]
        seen = {id(p) for p in loc + pre}
        rest = [p for p in self.parameters() if id(p) not in seen]
        return {"localisation": loc, "pre_st": pre, "classifier": rest}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

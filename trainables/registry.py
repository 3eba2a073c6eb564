"""The variant and dataset registry: one source of truth for the CLIs, configs and tests.

A variant name (``CNN``, ``STN-C0``, ``STN-C<X>``, ``STN-SL<X>``, ``STN-DL<X>``, optional ``x<N>``
iterations) parses to a ``VariantSpec`` and back. ``check_variant`` rejects a request the network
cannot honour with one line naming the allowed values, using the shape arithmetic of
``architectures`` so that no torch shape error ever reaches a user.

``DATASETS`` is the MNIST distortion family that studies sweep; ``DEEP_DATASETS`` are the harder
datasets of the ICPR study (SVHN, multi-digit SVHN, PlanktonSet) with their deeper networks. Every
function here takes either kind; ``ALL_DATASETS`` lists both. All three are read off the dataset
registry (``trainables.datasets``), as are the architectures and pose kinds.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from trainables.architectures import Architecture, ShapeError, map_after_blocks, st_output_side, stack_output
from trainables.datasets import DEEP, MNIST, VariantError, dataset_names, dataset_spec

DATASETS: tuple[str, ...] = dataset_names(MNIST)
DEEP_DATASETS: tuple[str, ...] = dataset_names(DEEP)
ALL_DATASETS: tuple[str, ...] = DATASETS + DEEP_DATASETS
# The transform each dataset's generator applies and reports; datasets without one get no pose metrics.
POSE_KIND = {name: dataset_spec(name).pose_kind for name in ALL_DATASETS if dataset_spec(name).pose_kind}
# How many numbers the localisation network predicts for each ST parameterisation.
ST_TRANSFORMS: dict[str, int] = {"affine": 6, "similarity": 4, "rotation": 1, "translation": 2}
SHARINGS = {"none": "C", "shared": "SL", "copy": "DL"}
CORE_VARIANTS: tuple[str, ...] = ("CNN", "STN-C0", "STN-C1", "STN-SL1", "STN-DL1")

_NAME = re.compile(r"^STN-(C|SL|DL)(\d+)(?:[x×](\d+))?$", re.IGNORECASE)
_GRAMMAR = "CNN, STN-C<X>, STN-SL<X>, STN-DL<X>, optionally with x<N> iterations (e.g. STN-SL1x2)"


@dataclass(frozen=True)
class VariantSpec:
    """depth = classifier blocks before the ST (None for the plain CNN); sharing = none|shared|copy."""

    depth: int | None
    sharing: str = "none"
    iterations: int = 1

    @property
    def name(self) -> str:
        if self.depth is None:
            return "CNN"
        suffix = f"x{self.iterations}" if self.iterations > 1 else ""
        return f"STN-{SHARINGS[self.sharing]}{self.depth}{suffix}"

    @property
    def has_st(self) -> bool:
        return self.depth is not None

    @property
    def warps_input(self) -> bool:
        return self.depth == 0 or self.sharing in ("shared", "copy")

    def as_dict(self) -> dict:
        return asdict(self)


def parse_variant(value: str | dict | VariantSpec) -> VariantSpec:
    """Parse a name (or the structured dict form) into a spec, or raise a one-line VariantError."""
    if isinstance(value, VariantSpec):
        return value
    if isinstance(value, dict):
        unknown = set(value) - {"depth", "sharing", "iterations"}
        if unknown:
            raise VariantError(f"unknown variant field(s) {sorted(unknown)}: allowed depth, sharing, iterations")
        sharing = value.get("sharing", "none")
        if sharing not in SHARINGS:
            raise VariantError(f"unknown sharing {sharing!r}: allowed {', '.join(SHARINGS)}")
        depth, iterations = value.get("depth"), int(value.get("iterations", 1))
        spec = VariantSpec(None if depth is None else int(depth), sharing, iterations)
    elif isinstance(value, str):
        text = value.strip()
        if text.upper() == "CNN":
            return VariantSpec(None)
        match = _NAME.match(text)
        if not match:
            raise VariantError(f"unknown variant {value!r}: expected {_GRAMMAR}")
        code, depth, iterations = match.group(1).upper(), int(match.group(2)), int(match.group(3) or 1)
        sharing = {v: k for k, v in SHARINGS.items()}[code]
        spec = VariantSpec(depth, sharing, iterations)
    else:
        raise VariantError(f"variant must be a name or a dict, got {type(value).__name__}")
    if spec.depth is None:
        if spec.iterations != 1 or spec.sharing != "none":
            raise VariantError("the CNN has no ST: sharing must be 'none' and iterations 1")
        return spec
    if spec.iterations < 1:
        raise VariantError(f"variant {spec.name!r}: iterations must be >= 1")
    if spec.depth < 0:
        raise VariantError(f"variant depth must be >= 0, got {spec.depth}")
    if spec.depth == 0 and spec.sharing != "none":
        raise VariantError(
            f"variant STN-{SHARINGS[spec.sharing]}0 has no layers to share or copy at depth 0: use STN-C0"
        )
    return spec


def architecture(dataset: str) -> Architecture:
    return dataset_spec(dataset).architecture


def check_st_transform(st_transform: str) -> str:
    if st_transform not in ST_TRANSFORMS:
        raise VariantError(f"unknown st_transform {st_transform!r}: allowed {', '.join(ST_TRANSFORMS)}")
    return st_transform


def _shape_problem(arch: Architecture, spec: VariantSpec) -> str | None:
    """Why ``spec`` cannot be built on ``arch`` (a short phrase), or None when it can."""
    blocks = arch.classifier_blocks
    if spec.depth is None:
        try:
            map_after_blocks(arch, len(blocks))
        except ShapeError as err:
            return f"the classifier cannot take its input ({err})"
        return None
    if spec.depth > len(blocks):
        return f"depth {spec.depth} is beyond the classifier's {len(blocks)} blocks"
    try:
        channels, side = map_after_blocks(arch, spec.depth)
    except ShapeError as err:
        return f"the classifier cannot reach depth {spec.depth} ({err})"
    try:
        stack_output(arch.head, channels, side)
    except ShapeError as err:
        return f"the localisation head cannot take the {channels}x{side}x{side} map at depth {spec.depth} ({err})"
    if spec.warps_input:
        start_depth, start_channels, start_side = 0, arch.in_channels, st_output_side(arch, arch.input_side)
    else:
        start_depth, start_channels, start_side = spec.depth, channels, st_output_side(arch, side)
    try:
        for block in blocks[start_depth:]:
            start_channels, start_side = stack_output(block, start_channels, start_side)
    except ShapeError as err:
        return f"the classifier after the ST cannot take its {start_side}x{start_side} map ({err})"
    return None


def allowed_depths(dataset: str, sharing: str) -> list[int]:
    arch = architecture(dataset)
    depths = range(0 if sharing == "none" else 1, len(arch.classifier_blocks) + 1)
    return [d for d in depths if _shape_problem(arch, VariantSpec(d, sharing)) is None]


def check_variant(dataset: str, variant: str | dict | VariantSpec, st_transform: str = "affine") -> VariantSpec:
    """Parse and validate a (dataset, variant, st_transform) cell; raise a one-line VariantError."""
    arch = architecture(dataset)
    check_st_transform(st_transform)
    spec = parse_variant(variant)
    problem = _shape_problem(arch, spec)
    if problem:
        code = SHARINGS[spec.sharing]
        depths = ", ".join(str(d) for d in allowed_depths(dataset, spec.sharing)) or "none"
        raise VariantError(
            f"variant {spec.name!r} is not possible on {dataset}: {problem}; allowed depths for STN-{code}<X>: {depths}"
        )
    return spec


def canonical_variants(dataset: str) -> list[tuple[str, str]]:
    """The finite list of (variant, st_transform) cells that the tests and presets draw from."""
    cells = [(name, "affine") for name in CORE_VARIANTS]
    arch = architecture(dataset)
    for depth in allowed_depths(dataset, "none"):
        if depth >= 2 and (arch.studied_depths is None or depth in arch.studied_depths):
            cells += [(f"STN-{code}{depth}", "affine") for code in ("C", "SL", "DL")]
    cells += [("STN-SL1x2", "affine"), ("STN-C1x2", "affine")]
    cells += [("STN-C0", t) for t in ST_TRANSFORMS if t != "affine"]
    cells += [("STN-SL1", "rotation" if dataset_spec(dataset).has_slope else "similarity")]
    return [(v, t) for v, t in cells if _shape_problem(arch, parse_variant(v)) is None]


def all_canonical(datasets: tuple[str, ...] = DATASETS) -> list[tuple[str, str, str]]:
    """Canonical cells of ``datasets`` (default: the MNIST family a study sweeps)."""
    return [(d, v, t) for d in datasets for v, t in canonical_variants(d)]

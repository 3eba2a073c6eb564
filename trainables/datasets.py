"""One ``DatasetSpec`` per dataset: every fact the code needs about a dataset, in one registry.

A spec says what a dataset's images are (side, channels, classes, label positions, normalisation),
where they come from (the loader, whether it downloads, the folder under a study's ``data_root``),
what the training and evaluation streams draw from them (the generator; its pose kind and unit
for the pose metrics), which extra metrics evaluation adds, how a report names it, which family it
belongs to (the MNIST sweep or the deeper ICPR networks) and its network (``architectures``). The
loop, evaluation, CLIs, study config and report all read it, so adding a dataset is one
``register_dataset`` call here, its loader and its network.

Loaders and generators are named by import path (``module:attribute``) and imported on first use:
reading a spec (a study config, a report) never imports torch, torchvision or PIL.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from trainables.architectures import PLANKTON, ROTATED_MNIST, SCALED_MNIST, SVHN, TRANSLATED_MNIST, Architecture, Network
from trainables.pose import POSE_KINDS, PoseKind

MNIST, DEEP = "mnist", "deep"  # the families: the MNIST distortions a study sweeps; the ICPR study's deeper networks
UNCHANGED = "trainables.augment:Unchanged"  # the stored images, as they are
MNIST_DIGIT = (28, 28)  # what the MNIST loader yields per image; the family's generators draw it onto their canvas


class VariantError(ValueError):
    """A variant, dataset or ST parameterisation that cannot be built; the message is one line."""


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """The facts of one dataset; ``architecture`` is its network bound to them."""

    name: str
    family: str  # MNIST or DEEP
    side: int  # of the images the network takes (the generator's canvas for the MNIST family)
    classes: int  # per label position
    network: Network
    loader: str  # "module:function" taking (data_root, download) and returning ``splits.MnistSplits``
    layout: str  # what its folder holds: CLI help and docs
    channels: int = 1
    positions: int = 1  # labels per image (multi-digit SVHN: 5), each of ``classes``
    stored: tuple[int, ...] | None = None  # the loader's image shape when it differs from (channels, side, side)
    source: str = ""  # the loader's data, shared by datasets that draw from one ("": the dataset's own)
    folder: str | None = None  # where the source lives under a study's data_root (None: <data_root>/<source>)
    embedded: bool = False  # runs without data_root (an offline subset ships with a dependency)
    downloadable: bool = False  # the loader fetches missing files when asked; else they are put in place by hand
    train_draw: str = UNCHANGED  # generator class ("module:Class", built with side= and draw_args) the training stream draws
    eval_draw: str | None = None  # what validation and test draw (None: the training generator)
    draw_args: tuple[tuple[str, object], ...] = ()  # keyword arguments of both generators, beyond side
    pose_kind: str = ""  # the transform the evaluation draws apply and report (``pose.POSE_KINDS``; "": none)
    extra_metrics: tuple[str, ...] = ()  # end-of-trial metrics beyond the common ones (``evaluate.EXTRA_METRICS``)
    label: str = ""  # the report's column ("": the name)
    norm_mean: float | tuple[float, ...] = 0.0  # a tuple: one value per channel
    norm_std: float | tuple[float, ...] = 1.0
    architecture: Architecture = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.family not in (MNIST, DEEP):
            raise ValueError(f"dataset {self.name}: family must be {MNIST} or {DEEP}, got {self.family!r}")
        if self.pose_kind and self.pose_kind not in POSE_KINDS:
            raise ValueError(f"dataset {self.name}: pose_kind must be one of {', '.join(POSE_KINDS)}")
        object.__setattr__(self, "source", self.source or self.name)
        object.__setattr__(self, "label", self.label or self.name)
        object.__setattr__(self, "architecture", Architecture(
            **{k: getattr(self.network, k) for k in Network.__dataclass_fields__}, dataset=self.name,
            input_side=self.side, in_channels=self.channels, num_classes=self.classes, positions=self.positions,
            norm_mean=self.norm_mean, norm_std=self.norm_std))

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """One image as the loader returns it."""
        return self.stored or (self.channels, self.side, self.side)

    @property
    def data_folder(self) -> str:
        """The source's folder relative to a study's data_root ("" = data_root itself)."""
        return self.source if self.folder is None else self.folder

    @property
    def pose(self) -> PoseKind | None:
        """The pose kind's object (None: no pose metrics)."""
        return POSE_KINDS[self.pose_kind] if self.pose_kind else None

    @property
    def has_slope(self) -> bool:
        """Its pose is one angle: the predicted-vs-applied slope (Fig. 3) is defined."""
        return self.pose is not None and self.pose.has_slope

    @property
    def pose_unit(self) -> str:
        return self.pose.unit if self.pose else ""

    def load(self, data_root=None, download: bool = False):
        """The dataset's splits (``splits.MnistSplits``) from its loader."""
        return _resolve(self.loader)(data_root, download)

    def train_distortion(self):
        """A fresh generator of the training stream (a ``distortions.Distortion``)."""
        return _resolve(self.train_draw)(side=self.side, **dict(self.draw_args))

    def eval_distortion(self):
        """A fresh generator of the validation and test streams."""
        return _resolve(self.eval_draw or self.train_draw)(side=self.side, **dict(self.draw_args))


def _resolve(path: str):
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


_SPECS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry (names are unique); returns it."""
    if spec.name in _SPECS:
        raise ValueError(f"dataset {spec.name!r} is registered twice")
    _SPECS[spec.name] = spec
    return spec


def dataset_names(family: str | None = None) -> tuple[str, ...]:
    """Registered names in registration order, optionally of one family."""
    return tuple(name for name, spec in _SPECS.items() if family is None or spec.family == family)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of ``name``, or a one-line VariantError naming the allowed datasets."""
    if name not in _SPECS:
        raise VariantError(f"unknown dataset {name!r}: allowed {', '.join(_SPECS)}")
    return _SPECS[name]


def source_spec(name: str) -> DatasetSpec:
    """The spec of a dataset, or of the first dataset that reads the data source ``name`` (``mnist``)."""
    if name in _SPECS:
        return _SPECS[name]
    for spec in _SPECS.values():
        if spec.source == name:
            return spec
    sources = dict.fromkeys(spec.source for spec in _SPECS.values())
    raise VariantError(f"unknown dataset or data source {name!r}: allowed {', '.join({**dict.fromkeys(_SPECS), **sources})}")


def make_distortion(dataset: str):
    """The training generator of ``dataset`` (the MNIST family: its distortion)."""
    return dataset_spec(dataset).train_distortion()


# ---------------------------------------------------------------- the registered datasets

_MNIST_FAMILY = dict(family=MNIST, channels=1, classes=10, stored=MNIST_DIGIT, source="mnist", folder="",
                     embedded=True, downloadable=True, loader="trainables.data:load_mnist",
                     layout="torchvision's MNIST/raw/ (default: the embedded 5,000-digit subset)")

register_dataset(DatasetSpec(
    name="rotated-mnist", side=28, network=ROTATED_MNIST, train_draw="trainables.distortions:Rotated",
    pose_kind="rotation", label="rotation", **_MNIST_FAMILY,
    norm_mean=0.1307, norm_std=0.3081,  # normalised: the authors' evaluation code normalises rotated MNIST's inputs
))
register_dataset(DatasetSpec(
    name="translated-mnist", side=60, network=TRANSLATED_MNIST, train_draw="trainables.distortions:Translated",
    pose_kind="translation", label="translation", **_MNIST_FAMILY,
    # not normalised: the authors' evaluation code states their translated data was not (their parser's
    # default; their statistics would be 0.0363 / 0.1870)
))
register_dataset(DatasetSpec(
    name="scaled-mnist", side=112, network=SCALED_MNIST, train_draw="trainables.distortions:Scaled",
    pose_kind="scale", label="scale", **_MNIST_FAMILY,
    # not normalised, as the authors' evaluation code reads their scaled models (0.0414 / 0.1751 if it were)
))
register_dataset(DatasetSpec(
    # rotations over the full turn (±180°; ours, not the paper's): its poses wrap at ±180° (``pose.POSE_KINDS``)
    name="rotated360-mnist", side=28, network=ROTATED_MNIST, train_draw="trainables.distortions:Rotated",
    draw_args=(("max_degrees", 180.0),), pose_kind="full-rotation", label="rotation ±180°", **_MNIST_FAMILY,
    norm_mean=0.1307, norm_std=0.3081,
))
_SVHN_STATISTICS = dict(norm_mean=(0.4377, 0.4438, 0.4728), norm_std=(0.1980, 0.2010, 0.1970))  # torchvision's train split
register_dataset(DatasetSpec(
    name="svhn", family=DEEP, side=32, channels=3, classes=10, network=SVHN, downloadable=True,
    loader="trainables.svhn:load_svhn", layout="train_32x32.mat and test_32x32.mat", **_SVHN_STATISTICS,
))
register_dataset(DatasetSpec(
    name="plankton", family=DEEP, side=95, classes=121, network=PLANKTON,
    loader="trainables.plankton:load_plankton", layout="a class-per-folder image tree (Kaggle data: by hand)",
    train_draw="trainables.augment:PlanktonAugment", eval_draw=UNCHANGED,
    extra_metrics=("rotation_consistency_deg",),  # rotation-invariant classes: every test image is turned 17 ways
    # inverted images in [0, 1], background 0: no published statistics, so no shift (our choice)
))
register_dataset(DatasetSpec(
    # the SVHN network and statistics on the same photographs (our choice); five output heads of 11 classes
    # (a digit 0-9 or none, the last class), one per position, as one 3072 -> 5·11 layer
    name="svhn-multi", family=DEEP, side=64, channels=3, classes=11, positions=5, network=SVHN,
    loader="trainables.svhn_multi:load_svhn_multi", layout="train.csv, test.csv and images/ (by hand)",
    **_SVHN_STATISTICS,
))

"""The dataset registry against the facts: each spec's images, labels and network agree with what its loader
(real files in the published layouts, or the embedded MNIST subset) and its generators actually produce."""

import pytest
import torch
from test_plankton import write_tree
from test_svhn import write_svhn
from test_svhn_multi import write_svhn_multi

from trainables.data import DistortedStream, load_data
from trainables.datasets import DEEP, MNIST, DatasetSpec, VariantError, dataset_names, dataset_spec, register_dataset, source_spec
from trainables.models import STNClassifier
from trainables.registry import ALL_DATASETS, DATASETS, DEEP_DATASETS, POSE_KIND, check_variant

# Published facts (docs/datasets.md, the papers): (channels, side, classes, positions, family, pose kind)
FACTS = {
    "rotated-mnist": (1, 28, 10, 1, MNIST, "rotation"),  # ±90°, on the digit's own 28×28
    "translated-mnist": (1, 60, 10, 1, MNIST, "translation"),  # 60×60 canvas, ±16 px
    "scaled-mnist": (1, 112, 10, 1, MNIST, "scale"),  # 112×112 canvas, 2^U(−1,2)
    "rotated360-mnist": (1, 28, 10, 1, MNIST, "full-rotation"),  # ours: ±180°, on the digit's own 28×28
    "svhn": (3, 32, 10, 1, DEEP, ""),  # torchvision's 32×32 colour crops
    "plankton": (1, 95, 121, 1, DEEP, ""),  # PlanktonSet: 121 classes, fitted to 95×95 greyscale
    "svhn-multi": (3, 64, 11, 5, DEEP, ""),  # 64×64 crops, 5 positions of a digit or none
}
WRITERS = {"svhn": write_svhn, "svhn-multi": write_svhn_multi, "plankton": write_tree}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STN_STUDY_CACHE", str(tmp_path / "cache"))


def test_every_registered_dataset_has_its_published_facts():
    assert set(dataset_names()) == set(FACTS)  # a new dataset adds its facts here
    for name, (channels, side, classes, positions, family, pose_kind) in FACTS.items():
        spec = dataset_spec(name)
        assert (spec.channels, spec.side, spec.classes, spec.positions, spec.family, spec.pose_kind) == \
            (channels, side, classes, positions, family, pose_kind), name


def test_the_registry_names_are_read_off_the_specs():
    assert DATASETS == ("rotated-mnist", "translated-mnist", "scaled-mnist", "rotated360-mnist")
    assert set(DEEP_DATASETS) == {"svhn", "svhn-multi", "plankton"} and ALL_DATASETS == DATASETS + DEEP_DATASETS
    assert POSE_KIND == {"rotated-mnist": "rotation", "translated-mnist": "translation", "scaled-mnist": "scale",
                         "rotated360-mnist": "full-rotation"}
    assert {dataset_spec(d).pose_unit for d in DATASETS} == {"°", "px", "log2"}
    assert all(dataset_spec(d).pose_unit == "" for d in DEEP_DATASETS)
    assert {source_spec("mnist").source, dataset_spec("svhn").source} == {"mnist", "svhn"}
    assert [d for d in ALL_DATASETS if dataset_spec(d).embedded] == list(DATASETS)  # only MNIST runs without files


@pytest.fixture
def loaded(request, tmp_path, splits):
    """The splits of a dataset as its loader reads them: MNIST's embedded subset, else stand-in files on disk."""
    name = request.param
    if name in WRITERS:
        WRITERS[name](tmp_path / name)
        return name, load_data(name, tmp_path / name)
    return name, splits


@pytest.mark.parametrize("loaded", list(FACTS), indirect=True)
def test_loader_generators_and_network_agree_with_the_spec(loaded):
    name, splits = loaded
    spec = dataset_spec(name)
    assert tuple(splits.train_x.shape[1:]) == spec.stored_shape
    assert splits.train_x.dtype == torch.uint8 and int(splits.train_y.max()) < spec.classes
    assert tuple(splits.train_y.shape[1:]) == (() if spec.positions == 1 else (spec.positions,))
    model = STNClassifier(name, "STN-C0").eval()
    assert model.arch.input_side == spec.side and model.arch.in_channels == spec.channels
    drawn = ((spec.train_distortion(), splits.train_x, splits.train_y), (spec.eval_distortion(), splits.val_x, splits.val_y))
    for distortion, x, y in drawn:
        assert distortion.pose_kind == spec.pose_kind and distortion.side == spec.side
        pool = splits.train_x if distortion.needs_pool else None
        images, labels, _ = next(DistortedStream(x[:4], y[:4], distortion, 4, pool).batches(0))
        assert tuple(images.shape) == (len(labels), spec.channels, spec.side, spec.side)
        with torch.no_grad():
            logits = model(images)
        expected = (len(labels), spec.classes) if spec.positions == 1 else (len(labels), spec.positions, spec.classes)
        assert tuple(logits.shape) == expected


def test_the_mnist_family_shares_one_source_and_the_others_their_own_folder(tmp_path):
    from study.prepare import source_root, study_sources

    assert study_sources(ALL_DATASETS) == ["mnist", "svhn", "plankton", "svhn-multi"]
    assert source_root(str(tmp_path), "mnist") == str(tmp_path)  # torchvision adds MNIST/raw itself
    assert source_root(str(tmp_path), "svhn-multi") == str(tmp_path / "svhn-multi")


@pytest.mark.parametrize("call", [dataset_spec, source_spec, lambda name: check_variant(name, "CNN"),
                                  lambda name: load_data(name)])
def test_an_unknown_dataset_is_one_line_naming_the_allowed_ones(call):
    with pytest.raises(VariantError) as err:
        call("mnist-rotated")
    message = str(err.value)
    assert "\n" not in message and "'mnist-rotated'" in message
    assert all(name in message for name in FACTS)


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset(dataset_spec("svhn"))
    with pytest.raises(ValueError, match="family"):
        DatasetSpec(name="x", family="other", side=8, classes=2, network=dataset_spec("svhn").network, loader="m:f",
                    layout="")

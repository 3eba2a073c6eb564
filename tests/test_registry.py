"""Variant names round-trip, canonical lists are finite and valid, impossible requests fail in one line."""

import pytest

from trainables.registry import (
    CORE_VARIANTS,
    DATASETS,
    ST_TRANSFORMS,
    VariantError,
    VariantSpec,
    all_canonical,
    allowed_depths,
    canonical_variants,
    check_variant,
    parse_variant,
)


@pytest.mark.parametrize("dataset,variant,st_transform", all_canonical())
def test_canonical_names_round_trip(dataset, variant, st_transform):
    spec = check_variant(dataset, variant, st_transform)
    assert spec.name == variant
    assert parse_variant(spec.as_dict()) == spec


@pytest.mark.parametrize("name,expected", [
    ("CNN", VariantSpec(None)),
    ("STN-C0", VariantSpec(0, "none", 1)),
    ("STN-C1", VariantSpec(1, "none", 1)),
    ("STN-SL1", VariantSpec(1, "shared", 1)),
    ("STN-DL2", VariantSpec(2, "copy", 1)),
    ("STN-SL1x2", VariantSpec(1, "shared", 2)),
    ("stn-sl1×3", VariantSpec(1, "shared", 3)),
    ({"depth": 1, "sharing": "shared", "iterations": 2}, VariantSpec(1, "shared", 2)),
])
def test_parse(name, expected):
    assert parse_variant(name) == expected


def test_core_five_on_every_dataset():
    for dataset in DATASETS:
        names = [v for v, t in canonical_variants(dataset) if t == "affine"]
        assert set(CORE_VARIANTS) <= set(names)
        assert len(canonical_variants(dataset)) == len(set(canonical_variants(dataset)))
    assert {t for _, _, t in all_canonical()} == set(ST_TRANSFORMS)


def test_allowed_depths_follow_the_map_sizes():
    # rotated: the 2x2 map at depth 2 is too small for the 5x5 head; scaled: 23x23 at depth 2 is fine
    assert allowed_depths("rotated-mnist", "none") == [0, 1]
    assert allowed_depths("translated-mnist", "shared") == [1]
    assert allowed_depths("scaled-mnist", "shared") == [1, 2]


@pytest.mark.parametrize("dataset,variant,st_transform,needle", [
    ("rotated-mnist", "STN-C2", "affine", "allowed depths for STN-C<X>: 0, 1"),
    ("rotated-mnist", "STN-SL5", "affine", "beyond the classifier's 2 blocks"),
    ("translated-mnist", "STN-DL2", "affine", "allowed depths for STN-DL<X>: 1"),
    ("rotated-mnist", "STN-XL1", "affine", "expected CNN, STN-C<X>"),
    ("rotated-mnist", "STN-SL0", "affine", "use STN-C0"),
    ("rotated-mnist", "CNNx2", "affine", "expected CNN"),
    ("mnist", "CNN", "affine", "allowed rotated-mnist, translated-mnist, scaled-mnist"),
    ("rotated-mnist", "STN-C0", "projective", "allowed affine, similarity, rotation, translation"),
    ("rotated-mnist", {"depth": 1, "sharing": "both"}, "affine", "allowed none, shared, copy"),
])
def test_impossible_requests_fail_in_one_line(dataset, variant, st_transform, needle):
    with pytest.raises(VariantError) as info:
        check_variant(dataset, variant, st_transform)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message

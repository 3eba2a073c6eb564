"""``trainables.pose``: each pose kind's facts, and the circle a full-turn rotation's pose lives on."""

import numpy as np
import pytest
import torch

from trainables.datasets import dataset_names, dataset_spec
from trainables.pose import POSE_KINDS, pose_kind


def test_the_kinds_and_their_units():
    assert {k: (p.formula, p.unit, p.has_slope, p.period) for k, p in POSE_KINDS.items()} == {
        "rotation": ("rotation", "°", True, None), "full-rotation": ("rotation", "°", True, 360.0),
        "translation": ("translation", "px", False, None), "scale": ("scale", "log2", False, None)}
    with pytest.raises(ValueError, match="allowed rotation, full-rotation, translation, scale"):
        pose_kind("shear")


def test_every_posed_dataset_names_a_kind():
    for name in dataset_names():
        spec = dataset_spec(name)
        assert spec.pose is None if not spec.pose_kind else spec.pose is POSE_KINDS[spec.pose_kind]


@pytest.mark.parametrize("values", [np.array([179.0, 181.0, -181.0, 360.0, 540.0, -90.0]),
                                    torch.tensor([179.0, 181.0, -181.0, 360.0, 540.0, -90.0])])
def test_a_full_turn_wraps_into_minus_180_to_180_and_others_do_not(values):
    wrapped = pose_kind("full-rotation").wrap(values)
    assert [float(v) for v in wrapped] == [179.0, -179.0, 179.0, 0.0, -180.0, -90.0]
    assert pose_kind("rotation").wrap(values) is values and pose_kind("scale").wrap(values) is values

"""The benchmark's pieces run and compare like with like (no timing asserts: ratios are reported)."""

import torch

from study.bench import PerSampleReference, data_speedup, train_vs_bound


def test_reference_pipeline_makes_the_same_kind_of_images(splits):
    for dataset, side in (("rotated-mnist", 28), ("translated-mnist", 60), ("scaled-mnist", 112)):
        image = PerSampleReference(splits.train_x[:20], dataset)[3]
        assert image.shape == (1, side, side) and 0 <= image.min() and image.max() <= 1
        assert image.sum() > 10  # a digit is there


def test_data_speedup_and_train_vs_bound_report_positive_ratios(splits):
    speed = data_speedup(splits.train_x[:256], workers=0)
    assert set(speed) == {"rotated-mnist", "translated-mnist", "scaled-mnist"}
    assert all(row["speedup"] > 0 and row["ours_img_s"] > 0 for row in speed.values())
    bound = train_vs_bound(splits, "CNN", epochs=2, train_size=256)
    assert bound["bound_img_s"] > 0 and 0 < bound["ratio"] < 10
    assert torch.get_num_threads() >= 1

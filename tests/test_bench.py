"""The benchmark's pieces run and compare like with like (no timing asserts: ratios are reported)."""

import torch

from study.bench.generation import PerSampleReference, data_speedup, spread
from study.bench.training import deep_step, train_vs_bound


def test_reference_pipeline_makes_the_same_kind_of_images(splits):
    for dataset, side in (("rotated-mnist", 28), ("translated-mnist", 60), ("scaled-mnist", 112)):
        image = PerSampleReference(splits.train_x[:20], dataset)[3]
        assert image.shape == (1, side, side) and 0 <= image.min() and image.max() <= 1
        assert image.sum() > 10  # a digit is there


def test_data_speedup_and_train_vs_bound_report_positive_ratios(splits):
    threads = torch.get_num_threads()
    speed = data_speedup(splits.train_x[:256], cores=0, repeats=3, min_seconds=0.01)
    assert torch.get_num_threads() == threads  # the matched-core setting does not leak out
    assert set(speed) == {"rotated-mnist", "translated-mnist", "scaled-mnist"}
    for row in speed.values():  # median and range over the interleaved repeats
        for key in ("speedup", "ours_img_s", "reference_img_s"):
            stats = row[key]
            assert stats["n"] == 3 and 0 < stats["min"] <= stats["median"] <= stats["max"]
    bound = train_vs_bound(splits, "CNN", epochs=2, train_size=256)
    assert bound["bound_img_s"] > 0 and 0 < bound["ratio"] < 10


def test_spread_is_median_and_range():
    assert spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}


def test_the_deeper_networks_step_is_measured_for_every_deep_dataset():
    from trainables.registry import DEEP_DATASETS

    rows = deep_step(variants=("CNN",), batch=2, steps=2)
    assert set(rows) == {f"{dataset}/CNN" for dataset in DEEP_DATASETS}
    for row in rows.values():
        assert row["step_img_s"] > 0 and row["data_img_s"] > 0 and 0 < row["data_share"] < 1


def test_the_schedule_floor_is_the_best_order_of_whole_trials_with_finals_after_their_search():
    from study.bench.overhead import schedule_floor

    # 4 equal search trials on 2 slots: two rounds
    assert schedule_floor([("a", "search", 10.0)] * 4, 2) == 20.0
    # b's final waits for both its searches (30 s on 2 slots), a's trials fill the gaps: 30 + 30
    trials = [("a", "search", 2.0), ("a", "final", 2.0), ("b", "search", 30.0), ("b", "search", 30.0),
              ("b", "final", 30.0)]
    assert schedule_floor(trials, 2) == 60.0
    assert schedule_floor(trials, 1) == 94.0  # one slot: everything in a row
    # worked by hand: C0 searches 66 s and a final 66 s, CNN searches 30 s and a final 30 s, 4 + 1 each, on
    # 2 slots. The work per slot is 240 s, but trials do not split: the best is slot A = C0, CNN, C0, CNN, CNN,
    # CNN final (0-66-96-162-192-222-252) beside slot B = C0, C0, CNN, C0 final (0-66-132-162-228): 252 s
    bench = [("C0", "search", 66.0)] * 4 + [("C0", "final", 66.0)] + [("CNN", "search", 30.0)] * 4 + [
        ("CNN", "final", 30.0)]
    assert schedule_floor(bench, 2) == 252.0
    assert schedule_floor(bench, 2, most_orders=1) == 240.0  # too many orders: the lower bound instead

"""``study.bench.generation``: the per-sample reference makes the same kind of images, the measurements compare like
with like (no timing asserts: ratios are reported)."""

import pytest
import torch

from study.bench import generation
from study.bench.generation import PerSampleReference, data_speedup, other_core_busy, repeated_rate, spread
from trainables.registry import DATASETS


def test_reference_pipeline_makes_the_same_kind_of_images(splits):
    for dataset, side in (("rotated-mnist", 28), ("translated-mnist", 60), ("scaled-mnist", 112), ("rotated360-mnist", 28)):
        image = PerSampleReference(splits.train_x[:20], dataset)[3]
        assert image.shape == (1, side, side) and 0 <= image.min() and image.max() <= 1
        assert image.sum() > 10  # a digit is there


def test_the_reference_is_seeded():
    digits = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    first, again, other = (PerSampleReference(digits, "translated-mnist", seed)[1] for seed in (3, 3, 4))
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.slow  # DataLoader passes over every generator
def test_data_speedup_reports_positive_ratios_and_keeps_the_thread_setting(splits):
    threads = torch.get_num_threads()
    speed = data_speedup(splits.train_x[:256], cores=0, repeats=3, min_seconds=0.01)
    assert torch.get_num_threads() == threads  # the matched-core setting does not leak out
    assert set(speed) == set(DATASETS) and {row["other_core"] for row in speed.values()} == {"idle"}
    for row in speed.values():  # median and range over the interleaved repeats
        for key in ("speedup", "ours_img_s", "reference_img_s"):
            stats = row[key]
            assert stats["n"] == 3 and 0 < stats["min"] <= stats["median"] <= stats["max"]


def test_spread_is_median_and_range():
    assert spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}


def test_repeated_rate_runs_seeded_passes_until_the_minimum_time(monkeypatch):
    seeds = []
    assert repeated_rate(seeds.append, 100, min_seconds=0.0) > 0 and seeds == [0]  # one pass, even with no time to fill
    seeds.clear()
    ticks = iter(range(100))  # a clock that moves 0.1 s per reading: start 0, after passes 0.1, 0.2, 0.3, end 0.4
    monkeypatch.setattr(generation.time, "perf_counter", lambda: next(ticks) / 10)
    rate = repeated_rate(seeds.append, 10, min_seconds=0.3)
    assert seeds == [0, 1, 2] and rate == pytest.approx(10 * 3 / 0.4)


def test_the_other_core_is_kept_busy_while_the_figure_is_measured_and_freed_after():
    import psutil

    before = {p.pid for p in psutil.Process().children()}
    with other_core_busy(True):
        burners = [p for p in psutil.Process().children() if p.pid not in before]
        assert len(burners) == 1 and burners[0].cpu_percent(interval=1.0) > 25  # spinning, even on a loaded machine
    assert not burners[0].is_running() or burners[0].status() == psutil.STATUS_ZOMBIE
    with other_core_busy(False):
        assert {p.pid for p in psutil.Process().children()} == before

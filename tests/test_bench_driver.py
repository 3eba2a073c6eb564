"""``study.bench.driver``: the meter's arithmetic, and the load study through the real driver on a local record."""

import pytest

from study.bench.driver import DriverMeter, driver_load


def test_the_meter_reports_the_steady_state_between_the_first_and_the_last_result(monkeypatch):
    import study.bench.driver as bench

    clock = iter([(10.0, 1.0), (10.5, 1.2), (11.0, 1.4), (12.0, 1.6)])
    meter = DriverMeter()
    now = [None]  # the clock's current (wall, CPU) reading
    monkeypatch.setattr(bench.time, "perf_counter", lambda: now[0][0])
    monkeypatch.setattr(bench.time, "process_time", lambda: now[0][1])
    for now[0] in clock:
        meter.on_trial_result(0, [], None, {})
    summary = meter.summary()
    assert summary["results"] == 4 and summary["results_per_s"] == pytest.approx(3 / 2.0)
    assert summary["cpu_ms_per_result"] == pytest.approx(1000 * 0.6 / 3)
    assert DriverMeter().summary() == {"results": 0}


def test_the_load_study_counts_every_result_and_reports_the_flatness(ray_local):
    out = driver_load(sizes=(1, 2), epochs=3, storages=("local",))["local"]
    small, large = out["runs"]
    # 2 cells... the smoke preset's 5 cells × trials × 3 epochs, less what the pruner stopped, plus 5 finals
    assert 5 * 3 * 1 <= small["results"] and large["results"] > small["results"]
    assert out["flatness"] == pytest.approx(large["cpu_ms_per_result"] / small["cpu_ms_per_result"])

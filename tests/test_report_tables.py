"""``study.report.tables``: the statistics against closed forms and scipy, and the cells' wording."""

import math

import pandas as pd
import pytest

from study.report.tables import DASH, comparison_notes, hedges_g, mean_sd, welch, welch_ci


def test_mean_sd_cells_are_mean_and_sample_sd_with_their_count():
    # 1, 2, 4 (×100): mean 233.33; deviations -133.3, -33.3, 166.7 → squares sum 46,666.7 / 2 → SD 152.75
    assert mean_sd([0.01, 0.02, 0.04], scale=100, digits=2) == "2.33 ± 1.53 (n=3)"
    assert mean_sd([0.5]) == "0.5 (n=1)"  # one value: no spread to show
    assert mean_sd([0.1, None, float("nan"), 0.3], digits=2) == "0.20 ± 0.14 (n=2)"  # missing values do not count
    assert mean_sd([None, float("nan")]) == mean_sd([]) == DASH


def test_hedges_g_by_hand_and_undefined_without_spread():
    # a = 2, 4 and b = 1, 3: both SDs √2, d = 1 / √2, correction 1 − 3 / (4·2 − 1) = 4/7
    assert hedges_g([2.0, 4.0], [1.0, 3.0]) == pytest.approx(1 / math.sqrt(2) * 4 / 7)
    assert math.isnan(hedges_g([1.0, 1.0], [1.0, 1.0]))


def test_welch_statistics_match_closed_forms():
    """a = 1, 2, 3 and b = 4, 5, 6: both variances 1, so Welch's df is exactly 4 and every number has a closed form."""
    r = welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    se = (1 / 3 + 1 / 3) ** 0.5
    df = (1 / 3 + 1 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (1 / 3) ** 2 / 2)
    assert df == pytest.approx(4.0)
    t = -3.0 / se
    x = abs(t) / (t * t + 4) ** 0.5
    p = 1 - x * (3 - x * x) / 2  # two-sided tail of Student's t with 4 df: F(t) = 1/2 + x (3 − x²) / 4
    t975 = 2.7764451051977934  # t quantile 0.975 at 4 df (tables)
    g = -3.0 / 1.0 * (1 - 3 / (4 * 6 - 9))  # d with pooled SD 1, times Hedges' correction 1 − 3/15
    assert r["diff"] == pytest.approx(-3.0) and r["t"] == pytest.approx(t)
    assert r["p"] == pytest.approx(p, rel=1e-9) and r["g"] == pytest.approx(g) == -2.4
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((-3.0 - t975 * se, -3.0 + t975 * se), rel=1e-9)


def test_welch_ci_by_hand_when_scipy_has_none():
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
    low, high = welch_ci(a, b, object())  # a result without confidence_interval(): Welch–Satterthwaite
    half = 2.7764451051977934 * (2 / 3) ** 0.5
    assert (low, high) == pytest.approx((-3.0 - half, -3.0 + half), rel=1e-9)


def comparison_frame(a, b):
    rows = [{"param.dataset": "rotated-mnist", "row": row, "stage": "final", "outcome": "completed", "test_error": v}
            for row, values in (("STN-SL1", a), ("STN-C1", b)) for v in values]
    return pd.DataFrame(rows)


def test_comparison_wording_below_and_above_significance():
    def note(a, b):
        (line,) = comparison_notes(comparison_frame(a, b), ("STN-SL1", "STN-C1"), "test_error", 1.0, "%")
        return line

    significant = note([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])  # p = 0.021
    assert "STN-SL1 − STN-C1 = -3.00 % (95 % CI -5.27 to -0.73), Hedges' g = -2.40" in significant
    assert significant.endswith("p = 0.0213: STN-SL1 is significantly lower than STN-C1 (α = 0.05)")
    assert note([4.0, 5.0, 6.0], [1.0, 2.0, 3.0]).endswith("STN-SL1 is significantly higher than STN-C1 (α = 0.05)")
    unclear = note([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])  # p = 0.57
    assert unclear.endswith("no detectable difference at n = 3, 3 (α = 0.05)")
    assert "do not differ" not in unclear and "95 % CI" in unclear and "Hedges' g" in unclear
    assert note([1.0], [1.5, 2.5]).endswith("not enough seeds for a test (need n ≥ 2 each)")


def test_not_enough_seeds():
    assert welch([0.1], [0.2, 0.3])["p"] is None


def test_the_eq1_reference_uses_the_digits_the_runs_measured_theirs_on(tmp_path):
    """The random-weight row is measured on the runs' own data_root's test digits, not the embedded subset's;
    without those files here it falls back to the embedded digits and says so."""
    from study.report.data import data_root_of
    from study.report.tables import random_reference
    from tests.test_data import write_idx

    write_idx(tmp_path / "MNIST" / "raw", n_train=300, n_test=256)
    runs = pd.DataFrame({"param.dataset": ["rotated-mnist", "rotated-mnist"], "param.data_root": ["None", str(tmp_path)]})
    assert data_root_of(runs, "rotated-mnist") == str(tmp_path) and data_root_of(runs, "scaled-mnist") is None
    theirs, notes = random_reference((("rotated-mnist", str(tmp_path)),))
    embedded, _ = random_reference((("rotated-mnist", None),))
    assert notes == [] and theirs["rotated-mnist"] != embedded["rotated-mnist"]
    missing, notes = random_reference((("rotated-mnist", str(tmp_path / "gone")),))
    assert missing == embedded and "embedded subset" in notes[0] and "gone" in notes[0]

"""``study.report.seeds``: every run on its row, and the rule that names a seed whose ST did not learn."""

import math

import pandas as pd
import pytest

from study.report.seeds import LEARNT_POSE_FRACTION, did_not_learn, per_run, seeds_table, verdict
from trainables.evaluate import untouched_pose_sd


def frame(rows):
    return pd.DataFrame([{"stage": "final", "outcome": "completed", **r} for r in rows])


def rotated(row, seed, slope, pose=30.0, error=0.05):
    return {"param.dataset": "rotated-mnist", "row": row, "seed": str(seed), "angle_slope": slope, "pose_sd": pose,
            "test_error": error}


QUICK_LIKE = frame([rotated("STN-SL1 [rotation]", s, v) for s, v in ((0, -0.91), (1, 0.00), (2, -0.73))]
                   + [rotated("STN-C1 [rotation]", s, v, 51.7) for s, v in ((0, 0.00), (1, -0.02), (2, 0.00))]
                   + [rotated("STN-C0 [rotation]", 0, -0.33)]
                   + [{"param.dataset": "rotated-mnist", "row": "CNN", "seed": "0", "test_error": 0.06}])


def test_the_untouched_pose_sd_is_the_spread_of_the_applied_transforms():
    # rotation uniform on ±90°: 180/√12; translation integer-uniform on ±16 px in x and y: √(2 (33² − 1)/12);
    # scale: t = 2 log2 s with log2 s uniform on [−1, 2]: 6/√12 (sampled: within 1 %)
    assert untouched_pose_sd("rotated-mnist") == pytest.approx(180 / math.sqrt(12), rel=0.01)
    assert untouched_pose_sd("translated-mnist") == pytest.approx(math.sqrt(2 * (33**2 - 1) / 12), rel=0.01)
    assert untouched_pose_sd("scaled-mnist") == pytest.approx(6 / math.sqrt(12), rel=0.01)


def test_a_collapsed_seed_is_named_and_feature_map_warps_are_not_flagged_on_rotations():
    line = did_not_learn(QUICK_LIKE)
    assert line.startswith("ST did not learn in 2 of 4 judged runs: ")  # SL1 × 3 and C0 are judged; C1 and the CNN not
    assert "rotated-mnist STN-SL1 [rotation] seed 1 (slope +0.00)" in line and "STN-C0 [rotation] seed 0 (slope -0.33)" in line
    assert "STN-C1" not in line and "\n" not in line
    verdicts = per_run(QUICK_LIKE).set_index(["variant", "seed"])["learnt"]
    assert verdicts[("STN-SL1 [rotation]", "0")] == "yes" and verdicts[("STN-SL1 [rotation]", "1")] == "NO"
    assert verdicts[("STN-C1 [rotation]", "1")] == "not expected" and verdicts[("CNN", "0")] == "—"


def test_the_threshold_is_inclusive_at_half_a_turn_back():
    assert verdict("rotated-mnist", "STN-SL1", pd.Series({"angle_slope": -0.5})) == "yes"
    assert verdict("rotated-mnist", "STN-DL2", pd.Series({"angle_slope": -0.49})) == "NO"


def test_translation_and_scale_judge_every_st_against_the_untouched_pose_sd():
    limit = LEARNT_POSE_FRACTION * untouched_pose_sd("translated-mnist")
    runs = frame([{"param.dataset": "translated-mnist", "row": "STN-C1", "seed": "1", "pose_sd": limit - 0.01},
                  {"param.dataset": "translated-mnist", "row": "STN-SL1", "seed": "1", "pose_sd": limit + 0.01}])
    assert per_run(runs)["learnt"].tolist() == ["yes", "NO"]  # C1 can learn a translation, so it is judged
    assert did_not_learn(runs) == f"ST did not learn in 1 of 2 judged runs: translated-mnist STN-SL1 seed 1 (pose SD {limit + 0.01:.2f} px)"


def test_every_seed_has_its_own_row_in_seed_order_and_the_rule_is_stated():
    table = seeds_table(QUICK_LIKE)
    sl1 = [i for i in table.cells.index if "STN-SL1" in i]
    assert sl1 == [f"rotated-mnist / STN-SL1 [rotation] / seed {s}" for s in (0, 1, 2)]
    assert table.cells.loc[sl1[1], "angle slope"] == "0.00" and table.cells.loc[sl1[1], "ST learnt"] == "NO"
    assert table.notes[0] == did_not_learn(QUICK_LIKE)
    assert any("slope ≤ -0.5" in n and "not flagged" in n for n in table.notes)


def test_no_failed_seed_says_so():
    runs = frame([rotated("STN-SL1", s, -0.9) for s in range(3)])
    assert did_not_learn(runs) == "ST did not learn: none of the 3 judged runs (every input-warping ST learnt by the rule below)"

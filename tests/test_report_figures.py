"""``study.report.figures``: each figure is a real PNG of the size its layout gives, and nothing without data."""

import numpy as np
import pandas as pd
from matplotlib.image import imread

from study.report.figures import (
    alignment_curves_figure,
    error_vs_depth_figure,
    fig2_aligned_examples,
    fig3_angle_plots,
    learning_curves_figure,
)


def angle_panel(slope):
    applied = np.random.default_rng(0).uniform(-90, 90, 200)
    return {"angle_applied": applied, "angle_predicted": slope * applied}


def test_one_angle_panel_per_variant_with_angles_and_none_without(tmp_path):
    panels = {"STN-C1": angle_panel(0.0), "STN-SL1": angle_panel(-1.0), "CNN": None, "STN-DL1": {"other": 1}}
    path = fig3_angle_plots(tmp_path / "fig3.png", panels)
    assert imread(path).shape[:2] == (380, 720)  # two panels of 3.6 × 3.8 in at 100 dpi; CNN and DL1 have no angles
    assert fig3_angle_plots(tmp_path / "none.png", {"CNN": None}) is None and not (tmp_path / "none.png").exists()


def test_aligned_examples_have_an_input_row_and_one_row_per_st(tmp_path):
    rng = np.random.default_rng(0)
    data = {"example_inputs": rng.random((8, 4, 28, 28)), "example_st_outputs": rng.random((8, 4, 28, 28))}
    one = imread(fig2_aligned_examples(tmp_path / "one.png", "rotated-mnist", {"STN-C1": data}))
    two = imread(fig2_aligned_examples(tmp_path / "two.png", "rotated-mnist", {"STN-C1": data, "STN-SL1": data}))
    assert one.shape[1] == two.shape[1] == 640  # 2 digits × 4 transforms, 0.8 in each at 100 dpi
    assert (one.shape[0], two.shape[0]) == (220, 310)  # rows × 0.9 in + 0.4 in: 2 and 3 rows
    assert fig2_aligned_examples(tmp_path / "none.png", "rotated-mnist", {"CNN": None}) is None


def test_curves_and_depth_figures_are_drawn_from_their_frames(tmp_path):
    curves = pd.DataFrame([{"run_id": f"r{cell}{stage}", "cell": f"c{cell}", "stage": stage, "epoch": epoch,
                            "val_error": 0.5 / epoch, "val_pose_sd": 50.0 / epoch}
                           for cell in range(4) for stage in ("search", "final") for epoch in (1, 2, 3)])
    assert imread(learning_curves_figure(tmp_path / "lc.png", curves)).shape[:2] == (600, 1200)  # 2 rows × 3 columns
    assert learning_curves_figure(tmp_path / "none.png", curves.iloc[0:0]) is None
    alignment = alignment_curves_figure(tmp_path / "al.png", "rotated-mnist", {"STN-C1": curves})
    assert imread(alignment).shape[:2] == (360, 520)  # only the pose SD: the frames have no angle slope
    assert alignment_curves_figure(tmp_path / "none.png", "rotated-mnist", {"STN-C1": pd.DataFrame()}) is None
    grid = pd.DataFrame({"row": ["C", "C", "SL"], "depth": [0, 2, 2], "mean": [40.0, 30.0, np.nan],
                         "sd": [1.0, np.nan, np.nan], "n": [2, 1, 0], "iterations": [1, 1, 1]})
    assert imread(error_vs_depth_figure(tmp_path / "depth.png", "plankton", grid, cnn=[50.0])).shape[:2] == (380, 560)
    assert error_vs_depth_figure(tmp_path / "none.png", "plankton", grid.iloc[2:]) is None  # no mean to draw

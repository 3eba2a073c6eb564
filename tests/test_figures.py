"""``trainables.figures``: a trial's figure data and PNGs written to a real directory."""

import numpy as np
from matplotlib.image import imread

from trainables.figures import angle_line_label, write_trial_figures


def test_the_deming_line_label_shows_the_sign_of_the_intercept():
    assert angle_line_label(-0.987, 2.34) == "-0.99·x + 2.3"
    assert angle_line_label(1.0, -0.04) == "1.00·x − 0.0"


def test_a_rotation_trial_writes_its_data_the_angle_plot_and_the_aligned_examples(tmp_path):
    rng = np.random.default_rng(0)
    applied = rng.uniform(-90, 90, 300)
    figures = {"angle_applied": applied, "angle_predicted": -applied, "example_inputs": rng.random((3, 4, 28, 28)),
               "example_st_outputs": rng.random((3, 4, 28, 28))}
    written = write_trial_figures(tmp_path / "new", figures, {"angle_slope": -1.0, "angle_intercept": 0.0}, "STN-C1")
    assert [p.name for p in written] == ["figures.npz", "angle_plot.png", "aligned_examples.png"]
    with np.load(tmp_path / "new" / "figures.npz") as data:
        assert set(data.files) == set(figures) and np.array_equal(data["angle_applied"], applied)
    assert imread(tmp_path / "new" / "angle_plot.png").shape[:2] == (400, 400)  # 4 × 4 in at 100 dpi
    grid = imread(tmp_path / "new" / "aligned_examples.png")
    assert grid.shape[:2] == (270, 720)  # 3 digits × (4 inputs + 4 ST outputs), 0.9 in each


def test_a_cnn_has_only_its_inputs_and_no_figures_means_no_files(tmp_path):
    inputs = np.zeros((2, 3, 28, 28))
    written = write_trial_figures(tmp_path, {"example_inputs": inputs}, {}, "CNN")
    assert [p.name for p in written] == ["figures.npz", "aligned_examples.png"]
    assert imread(written[1]).shape[:2] == (180, 270)  # 2 digits × 3 inputs
    assert write_trial_figures(tmp_path / "none", {}, {}, "x") == [] and list((tmp_path / "none").iterdir()) == []

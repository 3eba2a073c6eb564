"""``python -m study.recipe``: the grid is the product of the options, runs once each, and is tabulated."""

import json

from study.recipe import grid, main, parser, run_name


def test_grid_is_the_product_and_adam_ignores_momentum():
    args = parser().parse_args(["--variant", "STN-C0", "STN-SL1", "--optimizer", "adam", "sgd", "--momentum", "0", "0.9",
                                "--loc-lr-mult", "1", "3"])
    points = grid(args)
    # adam: 2 variants x 2 loc (momentum collapses to 0); sgd: 2 x 2 x 2 momenta
    assert len(points) == 2 * 2 + 2 * 2 * 2
    assert len({run_name(p) for p in points}) == len(points)
    assert {p["lr"] for p in points if p["optimizer"] == "adam"} == {1e-3}
    assert {p["lr"] for p in points if p["optimizer"] == "sgd"} == {0.01}


def test_a_tiny_grid_runs_each_training_once_and_tabulates_the_telemetry(tmp_path, capsys):
    argv = ["--variant", "STN-C0", "CNN", "--epochs", "2", "--train-size", "64", "--test-passes", "1",
            "--checkpoints", "1", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    runs = sorted(p.parent.name for p in tmp_path.glob("*/result.json"))
    assert len(runs) == 2
    stamps = {r: (tmp_path / r / "result.json").stat().st_mtime_ns for r in runs}
    assert main(argv) == 0  # everything is done: nothing runs again
    assert stamps == {r: (tmp_path / r / "result.json").stat().st_mtime_ns for r in runs}
    table = (tmp_path / "recipe.md").read_text()
    stn = json.loads((tmp_path / [r for r in runs if r.startswith("STN-C0")][0] / "result.json").read_text())
    assert f"{stn['history'][1]['val_angle_slope']:.2f}" in table and "slope@2" in table and "poseSD@1" in table
    assert (tmp_path / "recipe_curves.png").stat().st_size > 10_000
    assert "2 runs, 2 already done" in capsys.readouterr().out

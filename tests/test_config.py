"""Study configs: presets validate, overrides apply, every invalid field fails in one line."""

import subprocess
import sys

import pytest

from study.config import PRESETS, ConfigError, load
from study.launch import config_from_args, parser
from study.search.searcher import fixed_recipe


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_validate(preset):
    cfg = load(preset)
    assert cfg.name == preset and cfg.cells()
    assert load(preset).hash() == cfg.hash()


def test_smoke_is_the_default_and_says_it_is_not_results():
    cfg = load()
    assert cfg.name == "smoke"
    assert {c.variant for c in cfg.cells()} == {"CNN", "STN-C0", "STN-C1", "STN-SL1", "STN-DL1"}
    assert "NOT results" in cfg.description and "cpu-demo" in cfg.description and "paper" in cfg.description


def test_paper_preset_covers_three_distortions_and_deeper_rows():
    cells = {c.key for c in load("paper").cells()}
    assert {"rotated-mnist/STN-SL1", "translated-mnist/STN-C1", "scaled-mnist/STN-SL2"} <= cells


def test_icpr_preset_sweeps_depth_sharing_and_iterations_per_deep_dataset():
    cfg = load("icpr")
    cells = {c.key for c in cfg.cells()}
    for dataset, depths in (("svhn-multi", (2, 4, 6, 8)), ("plankton", (2, 4, 7, 10))):
        assert {f"{dataset}/CNN", f"{dataset}/STN-C0", f"{dataset}/STN-SL2x2", f"{dataset}/STN-DL2x2"} <= cells
        assert {f"{dataset}/STN-{code}{d}" for code in ("C", "SL", "DL") for d in depths} <= cells
    assert not any(c.dataset not in ("svhn-multi", "plankton") for c in cfg.cells())  # the paper's SVHN form
    assert cfg.data_root and not cfg.download and cfg.resources.gpus > 0  # both are put in place by hand
    assert 0 < cfg.n_startup_trials < cfg.trials_per_cell  # random start, then TPE (stated in the preset)


def test_data_root_is_resolved_on_the_driver():
    from pathlib import Path

    cfg = load("smoke", overrides={"datasets": ["plankton"], "variants": ["CNN"], "data_root": "~/data/x"})
    assert cfg.data_root == str(Path.home() / "data" / "x")  # workers read the driver's path, not their own home


def test_svhn_multi_is_a_deep_dataset_like_svhn():
    cfg = load("smoke", overrides={"datasets": ["svhn-multi"], "variants": ["CNN", "STN-SL2", "STN-DL8"],
                                   "data_root": "/d"})
    assert [c.key for c in cfg.cells()] == ["svhn-multi/CNN", "svhn-multi/STN-SL2", "svhn-multi/STN-DL8"]


def test_presets_choose_their_sampler_deliberately():
    smoke, paper = load("smoke"), load("paper-search")
    assert smoke.sampler == "tpe" and smoke.n_startup_trials >= smoke.trials_per_cell  # random search, stated
    assert paper.sampler == "tpe" and 0 < paper.n_startup_trials < paper.trials_per_cell  # random start, then TPE
    assert "sampler: tpe" in paper.to_yaml() and "n_startup_trials: 6" in paper.to_yaml()  # saved with the study


def test_cli_flags_and_set_override_fields():
    args = parser().parse_args(["--preset", "cpu-demo", "--epochs", "7", "--variants", "CNN", "STN-SL1",
                                "--set", "search.lr.high=0.01", "--gpus-per-trial", "0.5", "--final-seeds"])
    cfg = config_from_args(args)
    assert (cfg.epochs, cfg.variants, cfg.search.lr.high, cfg.resources.gpus, cfg.final_seeds) == \
        (7, ["CNN", "STN-SL1"], 0.01, 0.5, [])


def test_no_search_trains_the_fixed_recipe_of_the_space():
    cfg = load("quick")
    assert cfg.trials_per_cell == 0 and cfg.search.loose_fields() == []
    assert fixed_recipe(cfg.search) == {"optimizer": "adam", "lr": 1e-3, "loc_lr_mult": 1.0, "momentum": 0.0,
                                   "weight_decay": 0.0, "batch_size": 256}
    with pytest.raises(ConfigError, match="final_seeds: trials_per_cell 0 runs only final runs"):
        load("quick", overrides={"final_seeds": []})


def test_overrides_give_a_cell_its_own_space():
    cfg = load("smoke", overrides={"overrides": {"STN-C1": {"lr": {"low": 1e-5, "high": 1e-4, "log": True}}}})
    assert cfg.space_for("rotated-mnist", "STN-C1").lr.high == 1e-4
    assert cfg.space_for("rotated-mnist", "STN-SL1").lr.high == cfg.search.lr.high


@pytest.mark.parametrize("override,needle", [
    ({"trials_per_cell": -1}, "trials_per_cell: Input should be greater than or equal to 0"),
    ({"trials_per_cell": 0}, "search.lr: trials_per_cell 0 trains one fixed recipe: give a single value"),
    ({"variants": ["STN-C2"]}, "variants: variant 'STN-C2' is not possible on rotated-mnist"),
    ({"variants": []}, "variants: List should have at least 1 item"),
    ({"datasets": ["cifar"]}, "datasets: unknown dataset 'cifar': allowed rotated-mnist, translated-mnist, "
                              "scaled-mnist, rotated360-mnist, svhn, plankton"),
    ({"datasets": ["svhn"]}, "data_root: svhn has no embedded subset: allowed a folder holding svhn/"),
    ({"extra_cells": ["plankton/STN-SL7"]}, "data_root: plankton has no embedded subset"),
    ({"datasets": ["svhn-multi"]}, "data_root: svhn-multi has no embedded subset: allowed a folder holding "
                                   "svhn-multi/ (only rotated-mnist, translated-mnist, scaled-mnist, rotated360-mnist run without one); "
                                   "svhn-multi is read only (it cannot be downloaded): put its files there by hand"),
    ({"datasets": ["plankton"], "data_root": "/d", "variants": ["STN-SL11"]},
     "variants: variant 'STN-SL11' is not possible on plankton: depth 11 is beyond the classifier's 10 blocks; "
     "allowed depths for STN-SL<X>: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"),
    ({"data_root": "/d", "extra_cells": ["svhn/STN-DL9"]}, "extra_cells: variant 'STN-DL9' is not possible on svhn"),
    ({"bogus": 1}, "bogus: unknown key"),
    ({"search": {"lr": {"low": 0, "high": 1, "log": True}}}, "search.lr: a log range needs low > 0"),
    ({"search": {"lr": {"low": 0.1, "high": 0.01}}}, "search.lr: low (0.1) must be <= high (0.01)"),
    ({"search": {"lr": {"low": float("nan"), "high": 1}}}, "search.lr: range bounds must be finite"),
    ({"search": {"optimizer": ["rmsprop"]}}, "search.optimizer.0: allowed: 'sgd' or 'adam'"),
    ({"epochs": "ten"}, "epochs: Input should be a valid integer"),
    ({"resources": {"gpus": -1}}, "resources.gpus: Input should be greater than or equal to 0"),
    ({"st_transforms": ["projective"]}, "st_transforms: unknown st_transform 'projective'"),
    ({"overrides": {"STN-X9": {}}}, "overrides: 'STN-X9' names no cell"),
    ({"extra_cells": ["rotated-mnist/STN-SL2"]}, "extra_cells: variant 'STN-SL2' is not possible"),
    ({"sampler": "cmaes"}, "sampler: allowed: 'tpe', 'gp' or 'random' (got 'cmaes')"),
    ({"n_startup_trials": -1}, "n_startup_trials: Input should be greater than or equal to 0"),
    ({"final_seeds": [0, 2**20]}, "final_seeds: final seeds must lie in [0, 1048576) (search trials use seeds"),
    ({"final_seeds": [-1]}, "final_seeds: final seeds must lie in [0, 1048576)"),
])
def test_invalid_fields_fail_in_one_line(override, needle):
    with pytest.raises(ConfigError) as info:
        load("smoke", overrides=override)
    assert len(info.value.lines) == 1
    assert needle in info.value.lines[0] and "\n" not in info.value.lines[0]


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load(path=bad)
    with pytest.raises(ConfigError, match="file not found"):
        load(path=tmp_path / "missing.yaml")


def test_cli_rejects_invalid_config_before_starting_anything(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "study.launch", "--epochs", "0", "--trials-per-cell", "-1"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["config error: trials_per_cell: Input should be greater than or equal to 0 (got -1)",
                     "config error: epochs: must be an integer >= 1, got 0"]
    assert not (tmp_path / "mlflow_artifacts").exists()  # nothing written, nothing started

"""``study.tracking.contract``: the record's names — the files a trial writes are the ones the spool logs and the
report reads, and the driver's choice of each cell round-trips through the parent run's tags."""

import numpy as np

from study.tracking.contract import ARTIFACT_FILES, BEST_TAG, best_tags, hparams_hash, read_best_tags
from trainables.figures import write_trial_figures

HP = {"optimizer": "adam", "lr": 0.001, "loc_lr_mult": 1.0, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 64}


def test_every_file_a_trial_writes_is_one_the_record_keeps(tmp_path):
    rng = np.random.default_rng(0)
    figures = {"angle_applied": rng.uniform(-90, 90, 50), "angle_predicted": rng.uniform(-90, 90, 50),
               "example_inputs": rng.random((2, 3, 28, 28)), "example_st_outputs": rng.random((2, 3, 28, 28))}
    written = write_trial_figures(tmp_path, figures, {"angle_slope": -1.0, "angle_intercept": 0.0}, "cell")
    assert {p.name for p in written} <= set(ARTIFACT_FILES) and len(written) == 3


def test_the_chosen_configuration_of_each_cell_round_trips_through_tags():
    best = {"rotated-mnist/CNN": {"trial_number": 4, "val_error": 0.05, "hparams": HP},
            "rotated-mnist/STN-SL1/rotation": {"trial_number": None, "val_error": None, "hparams": HP}}
    tags = best_tags(best)
    assert set(tags) == {f"{BEST_TAG}rotated-mnist/CNN", f"{BEST_TAG}rotated-mnist/STN-SL1/rotation"}
    assert all(len(v) < 5000 for v in tags.values())  # MLflow's tag value limit
    back = read_best_tags({**tags, "study_id": "s", "mlflow.runName": "x"})
    assert back["rotated-mnist/CNN"] == {"trial_number": 4, "val_error": 0.05, "hparams_hash": hparams_hash(HP)}
    assert back["rotated-mnist/STN-SL1/rotation"]["trial_number"] is None

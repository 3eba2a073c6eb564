"""``study.trial_schema``: what a trial's config holds and the identities derived from it."""

from study.config import load
from study.trial_schema import (
    CELL_KEYS,
    HPARAM_KEYS,
    cell_fields,
    constants,
    final_key,
    hparams,
    hparams_hash,
    mlflow_params,
    trial_key,
)

HP = {"optimizer": "sgd", "lr": 0.01, "loc_lr_mult": 0.1, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 256}


def test_constants_give_final_runs_their_own_epochs():
    cfg = load("smoke", overrides={"epochs": 3, "final_epochs": 7, "lr_milestones": [0.5]})
    assert constants(cfg, "search")["epochs"] == 3 and constants(cfg, "final")["epochs"] == 7
    assert constants(cfg, "final")["stage"] == "final" and constants(cfg, "search")["lr_milestones"] == [0.5]
    assert constants(load("smoke", overrides={"epochs": 3}), "final")["epochs"] == 3  # no final_epochs: the same


def test_a_cell_and_its_hyper_parameters_round_trip_through_a_trial_config():
    cfg = load("smoke", overrides={"variants": ["STN-C1"]})
    cell = cfg.cells()[0]
    config = {**constants(cfg, "search"), **cell_fields(cell), "seed": 3, **HP}
    assert tuple(cell_fields(cell)) == CELL_KEYS and config["cell"] == cell.key and config["variant"] == "STN-C1"
    assert hparams(config) == HP and tuple(hparams(config)) == HPARAM_KEYS
    assert hparams({"lr": 0.1, "seed": 1}) == {"lr": 0.1}


def test_final_key_and_hash_name_the_configuration_whatever_else_the_config_holds():
    run = {"cell": "rotated-mnist/CNN", "seed": 1, **HP, "stage": "final", "trial_number": 4}
    as_mlflow_reads_it = {"cell": "rotated-mnist/CNN", "seed": "1", **{k: str(v) for k, v in HP.items()}}
    assert final_key(run) == final_key(as_mlflow_reads_it) == ("rotated-mnist/CNN", "1", tuple(str(HP[k]) for k in HPARAM_KEYS))
    assert final_key(run) != final_key({**run, "seed": 2}) != final_key({**run, "lr": 0.02})
    assert hparams_hash(run) == hparams_hash(as_mlflow_reads_it) == hparams_hash({**run, "seed": 9})
    assert hparams_hash(run) != hparams_hash({**run, "batch_size": 128}) and len(hparams_hash(run)) == 12


def test_mlflow_params_spell_out_the_variant_as_strings():
    config = {"dataset": "rotated-mnist", "variant": "STN-SL2x2", "st_transform": "affine", **HP, "epochs": 5,
              "seed": 0, "cell": "not a param"}
    params = mlflow_params(config)
    assert params["depth"] == "2" and params["sharing"] == "shared" and params["iterations"] == "2"
    assert params["lr"] == "0.01" and params["epochs"] == "5" and "cell" not in params
    assert mlflow_params({**config, "variant": "CNN"})["depth"] == "none"
    assert all(isinstance(v, str) for v in params.values())


def test_a_trial_key_is_its_cells_optuna_number_or_a_final_runs_seed_and_configuration():
    hp = {"optimizer": "adam", "lr": 0.001, "loc_lr_mult": 1.0, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 64}
    search = {"cell": "rotated-mnist/STN-C1", "stage": "search", "trial_number": 12, "seed": 99, **hp}
    assert trial_key(search) == "rotated-mnist+STN-C1+search-12"
    assert trial_key({**search, "lr": 0.5, "seed": 1, "epochs": 3}) == trial_key(search)  # the number says it all
    final = {**search, "stage": "final", "seed": 2}
    assert trial_key(final) == f"rotated-mnist+STN-C1+final-seed2-{hparams_hash(hp)}"
    assert trial_key({**final, "selected_from": 4, "epochs": 9}) == trial_key(final)
    assert len({trial_key(final), trial_key({**final, "seed": 3}), trial_key({**final, "lr": 0.002})}) == 3
    assert "/" not in trial_key(final)  # a file name in the study's storage
    assert trial_key({"cell": "rotated-mnist/CNN", "stage": "search", **hp}) is None  # outside a study: no number

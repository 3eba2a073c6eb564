"""``study.extension``: what a resume may change in a saved study, in one line when it may not."""

import pytest
from conftest import saved_study

from study.config import ConfigError
from study.extension import EXTENSIBLE, config_of, resumed_config
from study.state import find_state


@pytest.fixture
def state(tmp_path):
    return find_state(tmp_path / "tune", saved_study(tmp_path / "tune"))


def test_an_extension_changes_only_what_it_names(state):
    cfg = resumed_config(state, {"trials_per_cell": 5, "final_seeds": [0, 1, 2], "resources.cpus": 2})
    saved = config_of(state, {})
    assert (cfg.trials_per_cell, cfg.final_seeds, cfg.resources.cpus) == (5, [0, 1, 2], 2)
    assert cfg.model_dump(exclude={"trials_per_cell", "final_seeds", "resources", "tracking_uri"}) == \
        saved.model_dump(exclude={"trials_per_cell", "final_seeds", "resources", "tracking_uri"})


def test_repeating_a_saved_value_is_not_a_change(state):
    assert resumed_config(state, {"epochs": 2, "name": "saved"}).epochs == 2


@pytest.mark.parametrize("key, value", [("epochs", 3), ("datasets", ["scaled-mnist"]), ("search.lr.high", 0.5)])
def test_a_fact_of_the_study_is_refused_naming_what_may_change(state, key, value):
    with pytest.raises(ConfigError) as err:
        resumed_config(state, {key: value}, {"epochs": "--epochs"})
    (line,) = err.value.lines
    assert line.startswith(f"{'--epochs' if key == 'epochs' else key}: cannot be changed when resuming study {state.study_id}")
    assert line.endswith("allowed " + ", ".join(["trials_per_cell", *EXTENSIBLE[1:]]))


def test_an_invalid_extension_value_is_the_configs_own_one_line_error(state):
    with pytest.raises(ConfigError) as err:
        resumed_config(state, {"trials_per_cell": -1})
    assert len(err.value.lines) == 1 and err.value.lines[0].startswith("trials_per_cell")

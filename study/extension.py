"""What a resume may change in a study's saved config, and the config a resume runs with.

How much more to run, with what resources and where the records are may change; everything else is a
fact of the study, read from its ``study.json``.
"""

from __future__ import annotations

import yaml

from study.config import ConfigError, StudyConfig, set_path, validate
from study.state import StudyState

EXTENSIBLE = ("trials_per_cell", "final_seeds", "max_concurrent_trials", "resources.cpus", "resources.gpus",
              "tracking_uri", "storage_path")


def config_of(state: StudyState, changes: dict) -> StudyConfig:
    """The study's saved config with ``changes`` (field or dotted ``a.b`` keys) applied, validated again."""
    data = yaml.safe_load(state.config_yaml)
    for key, value in changes.items():
        set_path(data, key, value)
    return validate(data)


def refusal(what: str, study_id: str, names: dict) -> ConfigError:
    """One line: what would change a fact of the study, and what a resume may change."""
    allowed = ", ".join(names.get(key, key) for key in EXTENSIBLE)
    return ConfigError([f"{what}: cannot be changed when resuming study {study_id}: allowed {allowed}"])


def _get(data: dict, dotted: str):
    for key in dotted.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


def resumed_config(state: StudyState, changes: dict, names: dict | None = None) -> StudyConfig:
    """The saved config with ``changes`` on top; a field outside ``EXTENSIBLE`` may only repeat its saved value."""
    saved = config_of(state, {}).model_dump(mode="json")
    try:
        cfg, error = config_of(state, {"tracking_uri": state.tracking_uri, **changes}), None
    except ConfigError as err:  # a change that is refused anyway: say that, not what is wrong with its value
        cfg, error = None, err
    new = cfg.model_dump(mode="json") if cfg else {}
    for key, value in changes.items():
        if key not in EXTENSIBLE and (_get(new, key) if cfg else value) != _get(saved, key):
            raise refusal((names or {}).get(key, key), state.study_id, names or {})
    if error:
        raise error
    return cfg

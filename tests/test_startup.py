"""``study.startup``: the checks before a study's first trial refuse in one line and write nothing."""

import pytest

from study.config import ConfigError, load
from study.startup import check_local_resources, local_cpus, prepare_data, watched_paths


def test_more_cpus_or_gpus_than_this_machine_has_are_refused_naming_the_field_and_the_range(tmp_path):
    cfg = load("smoke", overrides={"resources": {"cpus": local_cpus() + 1, "gpus": 0}})
    with pytest.raises(ConfigError) as err:
        check_local_resources(cfg)
    assert err.value.lines == [f"resources.cpus: {local_cpus() + 1:g} CPU per trial, but this machine has "
                               f"{local_cpus()}: allowed 0 to {local_cpus()} (or --cluster for a cluster)"]
    check_local_resources(load("smoke", overrides={"resources": {"cpus": 1, "gpus": 0}}))  # fits: no error


def test_the_watched_paths_are_the_local_storage_and_the_sqlite_stores_folder(tmp_path):
    assert watched_paths(str(tmp_path / "tune"), f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}") == [
        tmp_path / "tune", tmp_path / "db"]
    assert watched_paths("s3://bucket/prefix", "http://127.0.0.1:5000") == []


def test_the_data_is_prepared_once_and_described_with_its_provenance():
    said = []
    source, digest = prepare_data(load("smoke"), said.append)
    assert source and len(digest) >= 12 and len(said) == 1 and "mnist" in said[0].lower()

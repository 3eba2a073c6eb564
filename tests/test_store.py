"""``study.tracking.store``: the tracking URI checked in one line, a real sqlite store, provenance tags. (Clients
racing to create one store: tests/test_store_start.py.)"""

import re
import socket
from types import SimpleNamespace

import pytest

from study.tracking.store import (
    PACKAGES,
    TrackingError,
    _schema_version,
    artifact_root_for,
    check_tracking_uri,
    default_tracking_uri,
    ensure_experiment,
    git_commit,
    open_client,
    provenance_tags,
    resolve_tracking_uri,
    schema_head,
    start_parent_run,
)


def test_the_uri_comes_from_the_config_then_the_environment_then_the_local_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(SimpleNamespace(tracking_uri=None)) == f"sqlite:///{tmp_path}/mlflow_artifacts/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(SimpleNamespace(tracking_uri=None)) == "http://env:5000"
    assert resolve_tracking_uri(SimpleNamespace(tracking_uri="sqlite:///x.db")) == "sqlite:///x.db"
    assert default_tracking_uri(tmp_path / "d") == f"sqlite:///{tmp_path}/d/mlflow.db"


def test_an_unusable_uri_is_one_line_before_anything_runs(tmp_path):
    with pytest.raises(TrackingError, match=r"unsupported scheme 'file'.*allowed sqlite, http"):
        check_tracking_uri(f"file://{tmp_path}")
    with socket.socket() as sock:  # a port nothing listens on: refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TrackingError) as err:
        check_tracking_uri(f"http://127.0.0.1:{port}", timeout=2.0)
    assert "is not reachable" in str(err.value) and "\n" not in str(err.value)
    check_tracking_uri(f"sqlite:///{tmp_path}/new/dir/mlflow.db")
    assert (tmp_path / "new" / "dir").is_dir()  # made for the store, so that MLflow can create its file


def test_artifacts_of_a_sqlite_store_lie_beside_it_and_a_server_decides_for_itself(tmp_path):
    assert artifact_root_for(f"sqlite:///{tmp_path}/m.db", tmp_path / "unused") == (tmp_path / "artifacts").as_uri()
    assert artifact_root_for("http://server:5000", tmp_path) is None


def test_provenance_names_the_commit_the_data_and_the_package_versions():
    tags = provenance_tags("cfg123", "embedded", "abc", "cpu")
    assert tags["config_hash"] == "cfg123" and tags["data_digest"] == "abc" and tags["device"] == "cpu"
    assert re.fullmatch(r"[0-9a-f]{40}|none", tags["git_commit"]) and tags["git_commit"] == git_commit()
    assert {f"version.{p}" for p in ("torch", "ray", "optuna", "mlflow")} <= set(tags)
    assert all(isinstance(v, str) for v in tags.values()) and len(PACKAGES) >= 5


def test_a_new_store_opens_at_its_schema_head_and_holds_the_experiment_and_parent_run(tmp_path):
    path = tmp_path / "mlflow.db"
    assert _schema_version(path) is None and not path.exists()  # read without creating the file
    client = open_client(f"sqlite:///{path}")
    assert _schema_version(path) == schema_head() and not list(tmp_path.glob(".mlflow.db.*"))  # published, aside gone
    exp = ensure_experiment(client, "study", (tmp_path / "artifacts").as_uri())
    assert ensure_experiment(client, "study", None) == exp  # the second time: the same experiment
    run_id = start_parent_run(client, exp, "s-1", "name: s\n", {"git_commit": "none"}, "a note")
    run = client.get_run(run_id)
    assert run.data.tags["study_id"] == "s-1" and run.data.tags["stage"] == "study" and run.info.run_name == "s-1"
    assert run.data.tags["mlflow.note.content"] == "a note"
    assert client.download_artifacts(run_id, "config/study.yaml", str(tmp_path))


@pytest.mark.slow  # builds a whole store aside before it finds the file is none
def test_a_store_that_is_not_one_is_refused_in_one_line(tmp_path):
    path = tmp_path / "mlflow.db"
    path.write_text("this is not a database")
    with pytest.raises(TrackingError) as err:
        open_client(f"sqlite:///{path}", wait_s=0.5)
    assert "\n" not in str(err.value) and str(path) in str(err.value)

"""The tracking spool against a real ``mlflow server`` that goes down and comes back."""

import json

import pytest
from conftest import MlflowServer
from mlflow.tracking import MlflowClient

from study.tracking.spool import TrackingSpool


@pytest.fixture()
def server(tmp_path):
    server = MlflowServer(tmp_path / "server").start()
    yield server
    server.stop()


def open_run(spool: TrackingSpool, key: str) -> None:
    """As the driver opens a trial's run: found again by its ``trial_key`` tag (``study.trial_schema.trial_key``)."""
    spool.submit("open", key=key, run_name=key, tags={"study_id": "s1", "trial_id": f"id-{key}", "trial_key": key,
                                                      "outcome": "running"}, params={"lr": "0.01"})


def epoch(spool: TrackingSpool, key: str, step: int) -> None:
    spool.submit("metrics", key=key, epoch=step, metrics=[["val_error", 1.0 / step, 0, step]])


def run_of(client: MlflowClient, experiment_id: str, key: str):
    (run,) = client.search_runs([experiment_id], f"tags.trial_key = '{key}'")
    return run


def test_an_outage_is_spooled_then_replayed_in_order(server, tmp_path):
    client = MlflowClient(server.uri)
    experiment_id = client.create_experiment("spooled")
    spool = TrackingSpool(server.uri, tmp_path / "spool", experiment_id, "s1", say=lambda _: None)
    open_run(spool, "t1")
    epoch(spool, "t1", 1)
    assert spool.flush(timeout=30) == 0 and not spool.journal.exists()  # applied, journal compacted

    server.stop()
    for step in (2, 3):
        epoch(spool, "t1", step)
    spool.submit("end", key="t1", status="FINISHED", tags={"outcome": "completed"})
    assert spool.flush(timeout=3) == 3  # nothing is lost: the updates wait on disk
    assert spool.outage_since is not None
    assert [json.loads(line)["op"] for line in spool.journal.read_text().splitlines()] == ["metrics", "metrics", "end"]

    server.start()
    assert spool.flush(timeout=60) == 0
    run = run_of(client, experiment_id, "t1")
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_error")] == [1, 2, 3]
    spool.close()


def test_updates_left_by_a_driver_are_replayed_by_the_next_one(tmp_path):
    server = MlflowServer(tmp_path / "server")  # not started: the first driver never reaches it
    spool = TrackingSpool(server.uri, tmp_path / "spool", "0", "s1", say=lambda _: None)
    open_run(spool, "t1")
    epoch(spool, "t1", 1)
    spool.submit("end", key="t1", status="FAILED", tags={"outcome": "diverged", "failure_reason": "NaN loss"})
    assert spool.flush(timeout=2) == 3
    spool.close()  # the driver is gone; its journal stays

    server.start()
    try:
        client = MlflowClient(server.uri)
        assert client.get_experiment("0") is not None  # the default experiment takes the runs
        said = []
        again = TrackingSpool(server.uri, tmp_path / "spool", "0", "s1", say=said.append)
        assert said and "replaying 3 updates" in said[0]
        assert again.flush(timeout=60) == 0
        run = run_of(client, "0", "t1")
        assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == "NaN loss"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_error")] == [1]
        # replaying twice changes nothing: the run is found by its trial key, the epoch is skipped
        open_run(again, "t1")
        epoch(again, "t1", 1)
        assert again.flush(timeout=30) == 0
        assert len(client.search_runs(["0"], "tags.trial_key = 't1'")) == 1
        assert len(client.get_metric_history(run.info.run_id, "val_error")) == 1
        again.close()
    finally:
        server.stop()


def test_a_request_the_server_refuses_is_dropped_not_retried_forever(server, tmp_path):
    client = MlflowClient(server.uri)
    experiment_id = client.create_experiment("refused")
    spool = TrackingSpool(server.uri, tmp_path / "spool", experiment_id, "s1", say=lambda _: None)
    spool.submit("tags", run_id="0" * 32, tags={"a": "b"})  # no such run: the server answers 404
    open_run(spool, "t1")
    assert spool.flush(timeout=60) == 0
    assert run_of(client, experiment_id, "t1").data.params == {"lr": "0.01"}
    spool.close()


def test_refusals_and_outages_are_told_apart_by_the_error():
    from mlflow.exceptions import MlflowException, RestException

    from study.tracking.spool import is_refusal

    def answered(code):  # what the client raises for an error answer of the server
        return RestException({"error_code": code, "message": code})

    assert is_refusal(answered("RESOURCE_DOES_NOT_EXIST")) and is_refusal(answered("INVALID_PARAMETER_VALUE"))
    assert not is_refusal(answered("TEMPORARILY_UNAVAILABLE"))  # 503: e.g. the database behind the server
    assert not is_refusal(answered("REQUEST_LIMIT_EXCEEDED"))  # 429
    assert not is_refusal(MlflowException("API request failed with exception ConnectionError"))  # 500
    assert not is_refusal(ConnectionRefusedError()) and not is_refusal(TimeoutError())
    assert is_refusal(ValueError("a malformed update"))  # never blocks the queue


def test_a_journal_line_cut_by_a_crash_is_skipped_and_the_next_update_kept(tmp_path):
    dead = MlflowServer(tmp_path / "server")  # never started
    spool = TrackingSpool(dead.uri, tmp_path / "spool", "0", "s1", say=lambda _: None)
    epoch(spool, "t1", 1)
    spool.close()
    with spool.journal.open("a") as f:
        f.write('{"seq": 2, "op": "metr')  # the driver died mid-write
    again = TrackingSpool(dead.uri, tmp_path / "spool", "0", "s1", say=lambda _: None)
    epoch(again, "t1", 2)
    again.close()
    third = TrackingSpool(dead.uri, tmp_path / "spool", "0", "s1", say=lambda _: None)
    ops = third._journal_after(0)
    third.close()
    assert [op.get("epoch") for op in ops] == [1, 2]


def test_a_refused_tag_never_leaves_a_run_running(tmp_path):
    """The run's end goes through even when the store refuses one of the tags sent with it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("ended")
    spool = TrackingSpool(uri, tmp_path / "spool", experiment_id, "s1", say=lambda _: None)
    open_run(spool, "t1")
    spool.submit("end", key="t1", status="FAILED", tags={"bad key?": "refused", "outcome": "failed"})
    assert spool.flush(timeout=60) == 0
    run = run_of(client, experiment_id, "t1")
    assert run.info.status == "FAILED" and run.data.tags["outcome"] == "failed" and "bad key?" not in run.data.tags
    spool.close()

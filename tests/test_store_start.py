"""A study's store opens while other MLflow clients create the same new sqlite store at that moment.

MLflow creates a new store's schema at the first open; two clients at once apply the same
migrations and all but one fail ("duplicate column name", alembic's "Online migration expected to
match one row"). Real clients in separate processes, released together, on fresh files.
"""

import multiprocessing
import time

import pytest

from study.tracking.store import TrackingError, ensure_experiment, open_client


def _client(uri: str, start: float, ours: bool) -> str:
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - imported before the start line, as a warm client
    from mlflow.tracking import MlflowClient

    while time.time() < start:
        pass
    try:
        if ours:
            ensure_experiment(open_client(uri), "study", None)
        else:  # another program (an ``mlflow ui``) opening the same store
            MlflowClient(uri).search_experiments()
        return "ok"
    except Exception as err:  # noqa: BLE001 - reported to the test
        return f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"


def test_the_driver_opens_a_new_store_while_other_clients_create_it(tmp_path):
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        for rep in range(3):
            uri = f"sqlite:///{tmp_path / f'mlflow{rep}.db'}"
            start = time.time() + 8  # every process has imported MLflow by then
            results = pool.starmap(_client, [(uri, start, True), (uri, start, True), (uri, start, False),
                                             (uri, start, False)])
            assert results[:2] == ["ok", "ok"], results  # ours always opens it (the others may have lost the race)
            from mlflow.tracking import MlflowClient

            assert [e.name for e in MlflowClient(uri).search_experiments() if e.name == "study"] == ["study"]


def test_a_store_that_cannot_be_opened_is_one_line_naming_what_to_do(tmp_path):
    (tmp_path / "mlflow.db").write_text("not a database")
    with pytest.raises(TrackingError) as err:
        open_client(f"sqlite:///{tmp_path / 'mlflow.db'}", wait_s=2)
    message = str(err.value)
    assert "\n" not in message and message.startswith("tracking_uri: the MLflow store")
    assert "move the file away and start again" in message

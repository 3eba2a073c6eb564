"""A study's store opens while other MLflow clients create the same new sqlite store at that moment.

MLflow creates a new store's schema at the first open; two clients at once apply the same
migrations and all but one fail ("duplicate column name", alembic's "Online migration expected to
match one row"). Real clients in separate processes, released together, on fresh files, with a CPU
burner beside them: the load under which our client used to meet a half-migrated store and fail.
"""

import multiprocessing
import subprocess
import sys
import time

import pytest

from study.tracking.store import TrackingError, ensure_experiment, open_client

REPEATS = 6
OUR_DELAYS_S = (0.0, 0.3, 0.6, 0.9, 1.2, 1.5)


def _client(uri: str, start: float, ours: bool) -> str:
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - imported before the start line, as a warm client
    from mlflow.tracking import MlflowClient

    while time.time() < start:
        time.sleep(0.001)
    try:
        if ours:
            ensure_experiment(open_client(uri), "study", None)
        else:  # another program (an ``mlflow ui``) opening the same store
            MlflowClient(uri).search_experiments()
        return "ok"
    except Exception as err:  # noqa: BLE001 - reported to the test
        return f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"


@pytest.fixture
def cpu_burner():
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield
    burner.kill()
    burner.wait()


@pytest.mark.slow
def test_the_driver_opens_a_new_store_while_other_clients_create_it(tmp_path, cpu_burner):
    from mlflow.tracking import MlflowClient

    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        for rep in range(REPEATS):
            uri = f"sqlite:///{tmp_path / f'mlflow{rep}.db'}"
            start = time.time() + (10 if rep == 0 else 2)  # every process has imported MLflow by then
            # the foreign clients start first, ours at a point of their migration (~2 s on a new store)
            delay = OUR_DELAYS_S[rep % len(OUR_DELAYS_S)]
            roles = [True, True, False, False]
            results = pool.starmap(_client, [(uri, start + (delay * (1 + i) if ours else 0), ours)
                                             for i, ours in enumerate(roles)])
            assert all(r == "ok" for r, ours in zip(results, roles, strict=True) if ours), (rep, results)  # the others may lose
            assert [e.name for e in MlflowClient(uri).search_experiments() if e.name == "study"] == ["study"]


def test_a_store_that_cannot_be_opened_is_one_line_naming_what_to_do(tmp_path):
    (tmp_path / "mlflow.db").write_text("not a database")
    with pytest.raises(TrackingError) as err:
        open_client(f"sqlite:///{tmp_path / 'mlflow.db'}", wait_s=2)
    message = str(err.value)
    assert "\n" not in message and message.startswith("tracking_uri: the MLflow store")
    assert "move the file away and start again" in message

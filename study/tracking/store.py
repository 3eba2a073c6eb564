"""The MLflow store: its URI checked before anything runs, the experiment, the parent run and its provenance."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from study.tracking.contract import Stage, Tag

if TYPE_CHECKING:  # MLflow's imports (~1.5 s) are made where a client is made: beside ray.init, not before it
    from mlflow.tracking import MlflowClient

SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql")
PACKAGES = ("torch", "torchvision", "ray", "optuna", "mlflow", "stn-study")


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message is one line."""


def default_tracking_uri(root: Path) -> str:
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def resolve_tracking_uri(cfg) -> str:
    """The config's store, else ``MLFLOW_TRACKING_URI``, else the sqlite file under ``mlflow_artifacts/``."""
    from study.paths import artifacts_root

    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(artifacts_root())


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail within seconds, before any trial starts, if the store is unusable."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if scheme not in SCHEMES:
        raise TrackingError(f"tracking_uri: unsupported scheme {scheme!r} in {uri!r}: allowed {', '.join(SCHEMES)}")
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                if response.status != 200:
                    raise TrackingError(f"tracking_uri: {uri} answered /health with HTTP {response.status}")
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(f"tracking_uri: MLflow server {uri} is not reachable ({reason}); start it or "
                                f"pass another --tracking-uri") from None
    elif scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
        if path is not None and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)


def _schema_version(path: Path) -> str | None:
    """The store's alembic revision, read without MLflow (which would start migrating an empty file)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
        return row[0] if row else None
    except sqlite3.Error:
        return None  # no file, an empty one, or one whose schema another client is creating


def schema_head() -> str:
    """The newest schema revision this MLflow writes, read from its migration scripts (no database)."""
    import mlflow.store.db_migrations
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory(os.path.dirname(mlflow.store.db_migrations.__file__)).get_heads()
    if len(heads) != 1:
        raise TrackingError(f"tracking_uri: this MLflow's migration scripts have {len(heads)} heads ({heads}), expected 1")
    return heads[0]


# What a client sees when it opens a sqlite store whose schema another client is creating at that moment.
CONCURRENT_MIGRATION = ("duplicate column name", "already exists", "online migration expected to match one row",
                        "no such table", "no such column", "database is locked")


def _racing(err: BaseException) -> bool:
    return any(text in f"{err}".lower() for text in CONCURRENT_MIGRATION)


def _publish_new_store(path: Path) -> None:
    """Create a complete store beside ``path`` and hard-link it into place unless a file is there.

    MLflow creates a new store's schema at its first open; two clients doing that at once apply the
    same migrations, and the store can end half-migrated for good ("no such column"). Built aside
    and published in one ``link``, our schema never races another client's: whoever created the
    file first migrates it alone.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    aside = path.with_name(f".{path.name}.{os.getpid()}.new")
    aside.unlink(missing_ok=True)
    try:
        SqlAlchemyStore(f"sqlite:///{aside}", aside.parent.as_uri()).engine.dispose()  # closed: all on disk
        try:
            os.link(aside, path)
        except FileExistsError:
            pass  # another client opened the path first: it creates the schema, we wait for it
    finally:
        aside.unlink(missing_ok=True)


def _wait_for_head(path: Path, head: str, deadline: float, stall_s: float) -> None:
    """Wait while another client migrates the store: until it reaches ``head``, stops moving for
    ``stall_s`` (an old store nobody is upgrading: MLflow then says what to run), or the deadline."""
    last, moved = _schema_version(path), time.monotonic()
    while last != head and time.monotonic() < deadline and time.monotonic() - moved < stall_s:
        time.sleep(0.1)
        version = _schema_version(path)
        if version != last:
            last, moved = version, time.monotonic()


def open_client(uri: str, wait_s: float = 60.0, stall_s: float = 10.0) -> MlflowClient:
    """An MlflowClient whose store is open at its schema's head, even while other clients (an ``mlflow
    ui``, a second driver) create the same new sqlite store; a failure is one line naming what to do.

    Our client never migrates a sqlite store another client is migrating: a new store is built aside
    and linked in, and a store below the head waits until its migrating client is done. An open that
    still meets a concurrent migration's error (a foreign client linked nothing and raced its peers)
    waits for the head and tries again, until ``wait_s``.
    """
    from mlflow.tracking import MlflowClient

    path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    deadline = time.monotonic() + wait_s
    head = schema_head() if path is not None else None
    started = time.monotonic()
    while True:
        version = _schema_version(path) if path is not None else head
        if version != head:
            if version is None and (not path.exists() or path.stat().st_size == 0):
                _publish_new_store(path)
            _wait_for_head(path, head, deadline, stall_s)
            if _schema_version(path) is None:
                raise TrackingError(f"tracking_uri: the MLflow store {path} did not reach schema {head} within "
                                    f"{time.monotonic() - started:.0f} s (another program created it and did not finish, "
                                    f"or left it broken, or it is no MLflow store): stop that program, move the file "
                                    f"away and start again")
        try:
            client = MlflowClient(uri)
            client.search_experiments(max_results=1)  # opens the store now: its schema is checked here, not mid-study
            return client
        except Exception as err:  # noqa: BLE001 - one line instead of a traceback
            if path is not None and _racing(err) and time.monotonic() < deadline:
                time.sleep(0.2)  # another client's migration is under way: wait for its head, then open again
                continue
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise TrackingError(f"tracking_uri: cannot open the MLflow store {uri} ({type(err).__name__}: {first}); "
                                f"check the --tracking-uri (or tracking_uri) and that this user can write there") from None


def artifact_root_for(uri: str, default_root: Path) -> str | None:
    """Local stores keep artifacts beside the database; a server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The experiment named ``name``, created if missing; another client creating it at once is no error."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={"mlflow.experimentKind": "custom_model_development"})
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS" or client.get_experiment_by_name(name) is None:
                raise
            experiment = client.get_experiment_by_name(name)  # created by another client in between
    client.set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind", "custom_model_development")
    return experiment.experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else "none"
    except (OSError, subprocess.TimeoutExpired):
        return "none"


def provenance_tags(config_hash: str, data_source: str, data_digest: str, device: str) -> dict[str, str]:
    tags = {"git_commit": git_commit(), "config_hash": config_hash, "data_source": data_source,
            "data_digest": data_digest, "device": device, "python": platform.python_version(),
            "host": platform.node()}
    for package in PACKAGES:
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return tags


def start_parent_run(client: MlflowClient, experiment_id: str, study_id: str, config_yaml: str,
                     tags: dict[str, str], description: str) -> str:
    run = client.create_run(experiment_id, run_name=study_id,
                            tags={Tag.STUDY_ID: study_id, Tag.STAGE: Stage.STUDY, Tag.NOTE: description, **tags})
    client.log_text(run.info.run_id, config_yaml, "config/study.yaml")
    return run.info.run_id


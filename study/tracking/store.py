"""The MLflow store: its URI checked before anything runs, the experiment, the parent run and its provenance."""

from __future__ import annotations

import platform
import subprocess
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # MLflow's imports (~1.5 s) are made where a client is made: beside ray.init, not before it
    from mlflow.tracking import MlflowClient

SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql")
PACKAGES = ("torch", "torchvision", "ray", "optuna", "mlflow", "stn-study")


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message is one line."""


def default_tracking_uri(root: Path) -> str:
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


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


def artifact_root_for(uri: str, default_root: Path) -> str | None:
    """Local stores keep artifacts beside the database; a server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags={"mlflow.experimentKind": "custom_model_development"})
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
                            tags={"study_id": study_id, "stage": "study", "mlflow.note.content": description, **tags})
    client.log_text(run.info.run_id, config_yaml, "config/study.yaml")
    return run.info.run_id


def find_parent_run(client: MlflowClient, experiment_id: str, study_id: str):
    runs = client.search_runs([experiment_id], f"tags.study_id = '{study_id}' and tags.stage = 'study'", max_results=1)
    return runs[0] if runs else None

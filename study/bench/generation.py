"""Data generation: our batched on-device generators vs a per-sample pipeline like the authors'."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader, Dataset

from trainables.data import DistortedStream
from trainables.datasets import dataset_spec, make_distortion
from trainables.distortions import CLUTTER_SIDE
from trainables.registry import DATASETS


class PerSampleReference(Dataset):
    """One image at a time, the way a classic torchvision pipeline builds these datasets."""

    def __init__(self, digits: torch.Tensor, dataset: str, seed: int = 0):
        spec = dataset_spec(dataset)
        self.digits, self.dataset = digits.float() / 255.0, dataset
        self.kind, self.side = spec.pose.formula, spec.side
        self.max_degrees = float(dict(spec.draw_args).get("max_degrees", 90.0))  # the rotated datasets' range
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.digits)

    def _crop(self) -> torch.Tensor:
        source = self.digits[self.rng.integers(len(self.digits))]
        y, x = self.rng.integers(0, 28 - CLUTTER_SIDE + 1, 2)
        return source[y:y + CLUTTER_SIDE, x:x + CLUTTER_SIDE]

    def _clutter(self, canvas: torch.Tensor) -> torch.Tensor:
        """Translated clutter as the authors' ``MNIST_noise(60)``: 6 crops at corners in [0, side - 6)."""
        side = canvas.shape[-1]
        for _ in range(6):
            py, px = self.rng.integers(0, side - CLUTTER_SIDE, 2)
            canvas[0, py:py + CLUTTER_SIDE, px:px + CLUTTER_SIDE] += self._crop()
        return canvas.clamp_(max=1.0)

    def _scaled_clutter(self, canvas: torch.Tensor) -> torch.Tensor:
        """Scaled clutter as the authors' ``MNIST_noise(112, scale=True)``: each crop resized to 2s × 2s,
        s in 1..9 (independent of the digit), centred in [2, side - 2), shrunk to stay on the canvas."""
        side = canvas.shape[-1]
        for _ in range(6):
            crop = self._crop()
            cy, cx = self.rng.integers(2, side - 2, 2)
            s = min(int(self.rng.integers(1, 10)), side - max(cy, cx), min(cy, cx))
            patch = torch.nn.functional.interpolate(crop[None, None], size=(2 * s, 2 * s), mode="bilinear")[0, 0]
            canvas[0, cy - s:cy + s, cx - s:cx + s] += patch
        return canvas.clamp_(max=1.0)

    def __getitem__(self, index):
        digit = self.digits[index][None]
        side = self.side
        if self.kind == "rotation":
            angle = float(self.rng.uniform(-self.max_degrees, self.max_degrees))
            return TF.rotate(digit, angle, TF.InterpolationMode.BILINEAR)
        if self.kind == "translation":
            canvas, origin = torch.zeros(1, side, side), (side - 28) // 2
            dy, dx = self.rng.integers(-16, 17, 2)
            canvas[0, origin + dy:origin + 28 + dy, origin + dx:origin + 28 + dx] = digit[0]
            return self._clutter(canvas)
        scale = float(2 ** self.rng.uniform(-1, 2))
        size = max(1, int(round(28 * scale)))
        resized = TF.resize(digit, [size, size], antialias=True)
        canvas = torch.zeros(1, side, side)
        if size <= side:
            top = (side - size) // 2
            canvas[:, top:top + size, top:top + size] = resized
        else:
            crop = (size - side) // 2
            canvas[:] = resized[:, crop:crop + side, crop:crop + side]
        return self._scaled_clutter(canvas)


def images_per_second(run, n: int) -> float:
    started = time.perf_counter()
    run()
    return n / (time.perf_counter() - started)


def repeated_rate(one_pass, n: int, min_seconds: float = 0.25) -> float:
    """Images per second over as many seeded passes as last ``min_seconds``: one short pass is mostly noise."""
    passes, started = 0, time.perf_counter()
    while passes == 0 or time.perf_counter() - started < min_seconds:
        one_pass(passes)
        passes += 1
    return n * passes / (time.perf_counter() - started)


def spread(values) -> dict:
    """Median and range of repeated measurements (what docs/performance.md quotes)."""
    values = sorted(values)
    return {"median": statistics.median(values), "min": values[0], "max": values[-1], "n": len(values)}


@contextlib.contextmanager
def other_core_busy(busy: bool):
    """A process spinning on another core while the figure is measured (``busy``), as a trial or a second
    trial does on a 2-core machine: the condition under which users measured our generators at half speed."""
    if not busy:
        yield
        return
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # running before the first measurement
        yield
    finally:
        burner.kill()
        burner.wait()


def data_speedup(digits: torch.Tensor, cores: int = 1, repeats: int = 7, min_seconds: float = 0.25,
                 busy: bool = False) -> dict:
    """Our generators vs the per-sample reference, interleaved, on the same number of cores.

    Ours runs with ``cores`` torch threads, the reference with ``cores`` DataLoader workers (one
    thread each; ``cores=0``: in this process). One core each is how a study's trials run and
    holds on a busy machine: two OpenMP threads beside other busy processes ran our rotated
    generation 10–50× slower. Each repeat times a warm reference pass and, right after it, as many
    passes of ours as last ``min_seconds`` (one is ~20 ms: too short alone), so both see the same
    machine; ``speedup`` is the median per-repeat ratio, with its range. ``busy``: a CPU burner runs on
    another core throughout (``other_core_busy``).
    """
    out, threads = {}, torch.get_num_threads()
    torch.set_num_threads(max(1, cores))
    try:
        with other_core_busy(busy):
            for dataset in DATASETS:
                out[dataset] = {**_paired_rates(digits, dataset, cores, repeats, min_seconds), "cores": cores,
                                "other_core": "busy" if busy else "idle"}
    finally:
        torch.set_num_threads(threads)
    return out


def _paired_rates(digits: torch.Tensor, dataset: str, cores: int, repeats: int, min_seconds: float) -> dict:
    stream = DistortedStream(digits, torch.zeros(len(digits), dtype=torch.long), make_distortion(dataset), 256, digits)
    loader = DataLoader(PerSampleReference(digits, dataset), batch_size=256, num_workers=cores,
                        persistent_workers=cores > 0)

    def reference_rate() -> float:
        return images_per_second(lambda: [None for _ in loader], len(digits))

    def ours_rate(seed: int) -> float:
        return repeated_rate(lambda k: [None for _ in stream.batches(seed + k)], len(digits), min_seconds)

    ours_rate(1000 * repeats), reference_rate()  # warm-up; the reference's workers start here
    pairs = [(reference_rate(), ours_rate(1000 * seed)) for seed in range(repeats)]  # pair order: ref, ours
    return {"ours_img_s": spread(o for _, o in pairs), "reference_img_s": spread(r for r, _ in pairs),
            "speedup": spread(o / r for r, o in pairs)}

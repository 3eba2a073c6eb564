"""Training throughput: a trial vs its compute bound, step options, epoch scaling, the deeper datasets' step."""

from __future__ import annotations

import statistics
import time

import torch

from study.bench.generation import images_per_second, repeated_rate
from trainables import metrics
from trainables.data import DistortedStream
from trainables.datasets import dataset_spec, make_distortion
from trainables.loop import TrainConfig, train
from trainables.models import STNClassifier
from trainables.registry import DATASETS, DEEP_DATASETS


def training_step(forward, optimizer, bf16: bool = False):
    """One forward + backward + Adam step with the loop's loss: the compute bound and the step options time this."""

    def step(images, labels):
        with torch.autocast(images.device.type, torch.bfloat16, enabled=bf16):
            loss = metrics.classification_loss(forward(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def train_vs_bound(splits, variant: str, epochs: int, train_size: int) -> dict:
    """A real trial's epochs vs the compute bound, paired: one bound pass right after each epoch.

    Pairing keeps the two under the same machine conditions (a shared CPU's speed drifts over
    seconds); the first pair is the warm-up. ``ratio`` is the median of the paired ratios.
    """
    cfg = TrainConfig(dataset="rotated-mnist", variant=variant, epochs=epochs, train_size=train_size,
                      optimizer="adam", lr=1e-3, device="cpu", test_passes=1)
    torch.manual_seed(0)
    model = STNClassifier("rotated-mnist", variant)
    if cfg.channels_last(torch.device("cpu")):  # the bound uses the trial's own layout
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    stream = DistortedStream(splits.train_x[:train_size], splits.train_y[:train_size],
                             make_distortion("rotated-mnist"), 256, splits.train_x)
    batches = list(stream.batches(0))  # pre-generated: the bound excludes data generation
    step = training_step(model, optimizer)

    def compute():
        for images, labels, _ in batches:
            step(images, labels)

    bound_rates = []
    result = train(cfg, splits=splits, evaluate_at_end=False,
                   on_epoch=lambda record, state: bound_rates.append(images_per_second(compute, train_size)))
    pairs = list(zip((r["images_per_s"] for r in result.history), bound_rates, strict=False))
    pairs = pairs[1:] or pairs
    return {"variant": variant, "trial_img_s": statistics.median(t for t, _ in pairs),
            "bound_img_s": statistics.median(b for _, b in pairs),
            "ratio": statistics.median(t / b for t, b in pairs), "pairs": len(pairs)}


def step_options(splits, variant: str = "STN-SL1", steps: int = 12) -> dict:
    """Training-step throughput of eager vs channels_last vs torch.compile vs bf16 autocast on pre-generated batches.

    Compile time is reported beside the speed so it can be set against a paper-length run; bf16 is
    the loop's ``precision: bf16`` (an option only where it pays: see docs/performance.md).
    """
    stream = DistortedStream(splits.train_x[:256 * steps], splits.train_y[:256 * steps],
                             make_distortion("rotated-mnist"), 256, splits.train_x)
    batches = list(stream.batches(0))
    out = {}
    for option in ("eager", "channels_last", "compile", "compile+channels_last", "channels_last+bf16"):
        torch.manual_seed(0)
        model = STNClassifier("rotated-mnist", variant)
        if "channels_last" in option:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = training_step(torch.compile(model) if "compile" in option else model, optimizer, bf16="bf16" in option)

        started = time.perf_counter()
        step(*batches[0][:2])  # the first step pays compilation
        first = time.perf_counter() - started
        rate = images_per_second(lambda step=step: [step(x, y) for x, y, _ in batches[1:]], 256 * (len(batches) - 1))
        out[option] = {"img_s": rate, "first_step_s": first}
    for row in out.values():
        row["vs_eager"] = row["img_s"] / out["eager"]["img_s"]
    return out


def scaling(splits) -> dict:
    rows = {}
    for dataset in DATASETS:
        for size in (250, 500, 1000):
            cfg = TrainConfig(dataset=dataset, variant="CNN", epochs=1, train_size=size, optimizer="adam",
                              lr=1e-3, device="cpu")
            result = train(cfg, splits=splits, evaluate_at_end=False)
            rows[f"{dataset}/{size}"] = result.history[0]["epoch_seconds"]
    return rows


def deep_step(variants=("CNN", "STN-SL2"), batch: int = 16, steps: int = 6) -> dict:
    """The deeper datasets' networks: one training step's img/s (median over steps) and drawing the batch's share.

    The images are random bytes in the stored shape (SVHN 3×32×32, multi-digit 3×64×64, plankton
    1×95×95): a step costs the same whatever the pixels show, so no dataset files are needed. The
    data share is the training stream's time (plankton's batched augmentation; SVHN draws as stored)
    over that plus the step's, both per image.
    """
    out, gen = {}, torch.Generator().manual_seed(0)
    for dataset in DEEP_DATASETS:
        spec = dataset_spec(dataset)
        n = batch * steps
        images = torch.randint(0, 256, (n, *spec.stored_shape), generator=gen, dtype=torch.uint8)
        labels = torch.randint(0, spec.classes, (n, spec.positions) if spec.positions > 1 else (n,), generator=gen)
        stream = DistortedStream(images, labels, spec.train_distortion(), batch)
        data_rate = repeated_rate(lambda seed, stream=stream: [None for _ in stream.batches(seed)], n)  # one pass is ~1 ms
        batches = list(stream.batches(1))
        for variant in variants:
            torch.manual_seed(0)
            model = STNClassifier(dataset, variant)
            step = training_step(model, torch.optim.Adam(model.parameters(), lr=1e-4))
            step(*batches[0][:2])  # warm-up: the first step allocates
            rate = statistics.median(images_per_second(lambda step=step, x=x, y=y: step(x, y), batch) for x, y, _ in batches[1:])
            out[f"{dataset}/{variant}"] = {"step_img_s": rate, "data_img_s": data_rate,
                                           "data_share": (1 / data_rate) / (1 / data_rate + 1 / rate)}
    return out

"""``python -m study.bench``: throughput ratios measured side by side in one run (table + JSON).

- ``data_speedup``: our batched on-device generators vs a per-sample reference pipeline like the
  authors' (torchvision transforms per sample in a DataLoader worker, clutter pasted per sample),
  interleaved repeats on one core each: median and range;
- ``train_vs_bound``: a trial's training throughput vs forward + backward + step of the same model on
  pre-generated batches (the compute bound);
- ``study_overhead``: 1 − Σ trial training time / (wall time × concurrent slots) of a real study;
- ``scaling``: seconds per epoch vs training-set size and canvas pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader, Dataset

from trainables.data import DistortedStream, load_embedded
from trainables.distortions import CLUTTER_SIDE, make_distortion
from trainables.loop import TrainConfig, train
from trainables.models import STNClassifier


class PerSampleReference(Dataset):
    """One image at a time, the way a classic torchvision pipeline builds these datasets."""

    def __init__(self, digits: torch.Tensor, dataset: str, seed: int = 0):
        self.digits, self.dataset = digits.float() / 255.0, dataset
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.digits)

    def _clutter(self, canvas: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        side = canvas.shape[-1]
        for _ in range(6):
            source = self.digits[self.rng.integers(len(self.digits))]
            y, x = self.rng.integers(0, 28 - CLUTTER_SIDE + 1, 2)
            patch = source[y:y + CLUTTER_SIDE, x:x + CLUTTER_SIDE][None]
            if scale != 1.0:
                size = max(1, int(round(CLUTTER_SIDE * scale)))
                patch = TF.resize(patch, [size, size], antialias=True)
            size = patch.shape[-1]
            py, px = self.rng.integers(0, side - size + 1, 2)
            canvas[0, py:py + size, px:px + size] += patch[0]
        return canvas.clamp_(max=1.0)

    def __getitem__(self, index):
        digit = self.digits[index][None]
        if self.dataset == "rotated-mnist":
            return TF.rotate(digit, float(self.rng.uniform(-90, 90)), TF.InterpolationMode.BILINEAR)
        if self.dataset == "translated-mnist":
            canvas = torch.zeros(1, 60, 60)
            dy, dx = self.rng.integers(-16, 17, 2)
            canvas[0, 16 + dy:44 + dy, 16 + dx:44 + dx] = digit[0]
            return self._clutter(canvas)
        scale = float(2 ** self.rng.uniform(-1, 2))
        size = max(1, int(round(28 * scale)))
        resized = TF.resize(digit, [size, size], antialias=True)
        canvas = torch.zeros(1, 112, 112)
        if size <= 112:
            top = (112 - size) // 2
            canvas[:, top:top + size, top:top + size] = resized
        else:
            crop = (size - 112) // 2
            canvas[:] = resized[:, crop:crop + 112, crop:crop + 112]
        return self._clutter(canvas, scale)


def images_per_second(run, n: int) -> float:
    started = time.perf_counter()
    run()
    return n / (time.perf_counter() - started)


def spread(values) -> dict:
    """Median and range of repeated measurements (what the README quotes)."""
    values = sorted(values)
    return {"median": statistics.median(values), "min": values[0], "max": values[-1], "n": len(values)}


def data_speedup(digits: torch.Tensor, cores: int = 1, repeats: int = 7, min_seconds: float = 0.25) -> dict:
    """Our generators vs the per-sample reference, interleaved, on the same number of cores.

    Ours runs with ``cores`` torch threads, the reference with ``cores`` DataLoader workers (one
    thread each; ``cores=0``: in this process). One core each is how a study's trials run and
    holds on a busy machine: two OpenMP threads beside other busy processes ran our rotated
    generation 10–50× slower. Each repeat times a warm reference pass and, right after it, as many
    passes of ours as last ``min_seconds`` (one is ~20 ms: too short alone), so both see the same
    machine; ``speedup`` is the median per-repeat ratio, with its range.
    """
    out, threads = {}, torch.get_num_threads()
    torch.set_num_threads(max(1, cores))
    try:
        for dataset in ("rotated-mnist", "translated-mnist", "scaled-mnist"):
            stream = DistortedStream(digits, torch.zeros(len(digits), dtype=torch.long), make_distortion(dataset),
                                     256, digits)
            loader = DataLoader(PerSampleReference(digits, dataset), batch_size=256, num_workers=cores,
                                persistent_workers=cores > 0)
            reference_rate = lambda: images_per_second(lambda: [None for _ in loader], len(digits))  # noqa: E731

            def ours_rate(seed: int) -> float:
                passes, started = 0, time.perf_counter()
                while passes == 0 or time.perf_counter() - started < min_seconds:
                    _ = [None for _ in stream.batches(seed + passes)]
                    passes += 1
                return passes * len(digits) / (time.perf_counter() - started)
            ours_rate(1000 * repeats), reference_rate()  # warm-up; the reference's workers start here
            pairs = [(reference_rate(), ours_rate(1000 * seed)) for seed in range(repeats)]  # pair order: ref, ours
            out[dataset] = {"ours_img_s": spread(o for _, o in pairs), "reference_img_s": spread(r for r, _ in pairs),
                            "speedup": spread(o / r for r, o in pairs), "cores": cores}
    finally:
        torch.set_num_threads(threads)
    return out


def training_step(forward, optimizer, bf16: bool = False):
    """One forward + backward + Adam step: the compute bound and the step options time this."""

    def step(images, labels):
        with torch.autocast(images.device.type, torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(forward(images), labels)
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
    pairs = list(zip((r["images_per_s"] for r in result.history), bound_rates))
    pairs = pairs[1:] or pairs
    return {"variant": variant, "trial_img_s": statistics.median(t for t, _ in pairs),
            "bound_img_s": statistics.median(b for _, b in pairs),
            "ratio": statistics.median(t / b for t, b in pairs), "pairs": len(pairs)}


def step_options(splits, variant: str = "STN-SL1", steps: int = 12) -> dict:
    """Training-step throughput of eager vs channels_last vs torch.compile vs bf16 autocast on pre-generated batches.

    Compile time is reported beside the speed so it can be set against a paper-length run; bf16 is
    the loop's ``precision: bf16`` (an option only where it pays: see the README's Performance).
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
        rate = images_per_second(lambda: [step(x, y) for x, y, _ in batches[1:]], 256 * (len(batches) - 1))
        out[option] = {"img_s": rate, "first_step_s": first}
    for row in out.values():
        row["vs_eager"] = row["img_s"] / out["eager"]["img_s"]
    return out


def study_overhead(epochs: int, train_size: int, trials_per_cell: int, final_seeds: list[int]) -> dict:
    """A real study (local Ray, sqlite MLflow; search and final runs): the share of slot time the trials did not work.

    A trial's work is ``trial_seconds`` (from entering the trainable to its last report: data, model,
    epochs, per-epoch checkpoints and the end evaluation); everything else — Ray start, scheduling,
    searcher, tracking, idle slots — is study overhead. ``epoch_share`` is the stricter view: the
    share of slot time spent inside training epochs.
    """
    from mlflow.tracking import MlflowClient

    from study.config import load
    from study.launch import run
    from study.report.data import load_study

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        cfg = load("smoke", overrides={"name": "bench", "variants": ["CNN", "STN-C0"], "trials_per_cell": trials_per_cell,
                                       "epochs": epochs, "train_size": train_size, "final_seeds": final_seeds,
                                       "pruner": "none", "tracking_uri": uri, "storage_path": f"{tmp}/tune"})
        started, started_epoch = time.perf_counter(), time.time()
        study_id = run(cfg, quiet=True)
        wall = time.perf_counter() - started
        client = MlflowClient(uri)
        runs = load_study(client, study_id).runs

        def total(key: str, reduce) -> float:
            return sum(reduce([m.value for m in client.get_metric_history(rid, key)] or [0.0]) for rid in runs["run_id"])

        work, epochs_s = total("trial_seconds", max), total("epoch_seconds", sum)
        infos = [client.get_run(rid).info for rid in runs["run_id"]]
        first_start = min(i.start_time for i in infos) / 1000 - started_epoch
        last_end = max(i.end_time for i in infos) / 1000 - started_epoch
        in_tune = sum(i.end_time - i.start_time for i in infos) / 1000  # Tune's trial start to trial end
    slots = cfg.max_concurrent_trials
    return {"wall_s": wall, "trial_work_s": work, "epoch_s": epochs_s, "slots": slots, "trials": len(runs),
            "mean_trial_s": work / max(1, len(runs)), "study_overhead": 1 - work / (wall * slots),
            "epoch_share": epochs_s / (wall * slots), "first_trial_start_s": first_start,
            "after_last_trial_s": wall - last_end,
            # where the overhead goes, as shares of slot time: before the first trial (imports, Ray,
            # MLflow schema, first worker), around each trial (actor start/reuse, reporting), idle slots
            "share_startup": first_start / wall,
            "share_trial_wrap": (in_tune - work) / (wall * slots),
            "share_idle_slots": (wall * slots - in_tune - first_start * slots) / (wall * slots)}


def scaling(splits) -> dict:
    rows = {}
    for dataset in ("rotated-mnist", "translated-mnist", "scaled-mnist"):
        for size in (250, 500, 1000):
            cfg = TrainConfig(dataset=dataset, variant="CNN", epochs=1, train_size=size, optimizer="adam",
                              lr=1e-3, device="cpu")
            result = train(cfg, splits=splits, evaluate_at_end=False)
            rows[f"{dataset}/{size}"] = result.history[0]["epoch_seconds"]
    return rows


PARTS = ("data_speedup", "train_vs_bound", "step_options", "study_overhead", "scaling_epoch_s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes (about 1 min; noisier ratios)")
    p.add_argument("--only", choices=PARTS, help="run one part (data_speedup: about 2 min)")
    p.add_argument("--out", help="write the JSON here too")
    args = p.parse_args(argv)
    quick, splits = args.quick, load_embedded()
    digits = splits.train_x[: 1000 if quick else 4000]
    started = time.perf_counter()
    run = {
        "data_speedup": lambda: data_speedup(digits, cores=1, repeats=5 if quick else 9),
        "train_vs_bound": lambda: [train_vs_bound(splits, v, 3 if quick else 6, len(digits)) for v in ("CNN", "STN-SL1")],
        "step_options": lambda: step_options(splits, steps=4 if quick else 12),
        "study_overhead": lambda: study_overhead(4, 1000, 2, [0]) if quick else study_overhead(12, 4000, 4, [0]),
        "scaling_epoch_s": lambda: scaling(splits) if not quick else {},
    }
    result = {"machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(), "torch": torch.__version__,
                          "ray": metadata.version("ray"), "date": time.strftime("%Y-%m-%d"),
                          "load_avg_1m": os.getloadavg()[0]}}  # on a shared CPU the load sets the spread
    result.update({name: run[name]() for name in PARTS if args.only in (None, name)})
    result["bench_seconds"] = time.perf_counter() - started
    for dataset, row in result.get("data_speedup", {}).items():
        ours, ref, x = row["ours_img_s"], row["reference_img_s"], row["speedup"]
        print(f"data    {dataset:<17} ours {ours['median']:>9,.0f} img/s  reference {ref['median']:>8,.0f} img/s  "
              f"speedup {x['median']:.1f}x (median of {x['n']}, range {x['min']:.1f}-{x['max']:.1f}x)")
    for row in result.get("train_vs_bound", []):
        print(f"train   {row['variant']:<17} trial {row['trial_img_s']:>8,.0f} img/s  bound {row['bound_img_s']:>8,.0f} "
              f"img/s  ratio {row['ratio']:.2f}")
    for option, row in result.get("step_options", {}).items():
        print(f"step    STN-SL1 {option:<21} {row['img_s']:>8,.0f} img/s  {row['vs_eager']:.2f}x eager  "
              f"first step {row['first_step_s']:.1f}s")
    if "study_overhead" in result:
        s = result["study_overhead"]
        print(f"study   {s['trials']} trials of {s['mean_trial_s']:.0f}s  wall {s['wall_s']:.0f}s  trial work "
              f"{s['trial_work_s']:.0f}s over {s['slots']} slots  overhead {s['study_overhead']:.2f}  "
              f"(epochs {s['epoch_share']:.0%} of slot time)")
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m study.bench``: throughput ratios measured side by side in one run (table + JSON).

- ``data_speedup``: our batched on-device generators vs a per-sample reference pipeline like the
  authors' (torchvision transforms per sample in a DataLoader worker, clutter pasted per sample),
  interleaved repeats on one core each: median and range;
- ``train_vs_bound``: a trial's training throughput vs forward + backward + step of the same model on
  pre-generated batches (the compute bound);
- ``step_options``: eager vs channels_last vs torch.compile vs bf16 autocast on one step;
- ``deep_step``: one training step of the SVHN and plankton networks and the data's share of it;
- ``study_overhead``: 1 − Σ trial training time / (wall time × concurrent slots) of a real study, and
  the same workload as the script a user would write with Tune alone (``study.bench.versus``);
- ``driver``: results per second and driver CPU per result at ~100, 1,000 and 10,000 results, on the
  local journal, S3 (loopback) and Postgres (``study.bench.driver``);
- ``scaling``: seconds per epoch vs training-set size and canvas pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import torch

from study.bench.driver import driver_load
from study.bench.generation import data_speedup
from study.bench.overhead import study_overhead
from study.bench.training import deep_step, scaling, step_options, train_vs_bound
from trainables.data import load_embedded

PARTS = ("data_speedup", "data_speedup_busy", "train_vs_bound", "step_options", "deep_step", "study_overhead", "driver", "scaling_epoch_s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes (about 1 min; noisier ratios)")
    p.add_argument("--only", nargs="+", choices=PARTS, help="run these parts only (data_speedup: about 2 min)")
    p.add_argument("--storages", nargs="+", choices=("local", "s3", "postgres"), default=["local", "s3", "postgres"],
                   help="the driver part's storages (S3 on loopback: ~7 min at 6,000 results)")
    p.add_argument("--out", help="write the JSON here too")
    args = p.parse_args(argv)
    quick, splits = args.quick, load_embedded()
    digits = splits.train_x[: 1000 if quick else 4000]
    started = time.perf_counter()
    run = {
        "data_speedup": lambda: data_speedup(digits, cores=1, repeats=5 if quick else 9),
        # the same beside a CPU burner on the other core: what a user sees with a second trial running
        "data_speedup_busy": lambda: data_speedup(digits, cores=1, repeats=5 if quick else 9, busy=True),
        "train_vs_bound": lambda: [train_vs_bound(splits, v, 3 if quick else 6, len(digits)) for v in ("CNN", "STN-SL1")],
        "step_options": lambda: step_options(splits, steps=4 if quick else 12),
        "deep_step": lambda: deep_step(steps=3 if quick else 6),
        "study_overhead": lambda: study_overhead(4, 1000, 2, [0], True) if quick else study_overhead(12, 4000, 4, [0], True),
        "driver": lambda: driver_load(sizes=(1, 4) if quick else (2, 20, 200), epochs=10, storages=tuple(args.storages)),
        "scaling_epoch_s": lambda: scaling(splits) if not quick else {},
    }
    result = {"machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(), "torch": torch.__version__,
                          "ray": metadata.version("ray"), "date": time.strftime("%Y-%m-%d"),
                          "load_avg_1m": os.getloadavg()[0]}}  # on a shared CPU the load sets the spread
    result.update({name: run[name]() for name in PARTS if args.only is None or name in args.only})
    result["bench_seconds"] = time.perf_counter() - started
    for dataset, row in [*result.get("data_speedup", {}).items(), *result.get("data_speedup_busy", {}).items()]:
        ours, ref, x = row["ours_img_s"], row["reference_img_s"], row["speedup"]
        print(f"data    {dataset:<17} other core {row['other_core']:<4} ours {ours['median']:>9,.0f} img/s  "
              f"reference {ref['median']:>8,.0f} img/s  speedup {x['median']:.1f}x (median of {x['n']}, "
              f"range {x['min']:.1f}-{x['max']:.1f}x)")
    for row in result.get("train_vs_bound", []):
        print(f"train   {row['variant']:<17} trial {row['trial_img_s']:>8,.0f} img/s  bound {row['bound_img_s']:>8,.0f} "
              f"img/s  ratio {row['ratio']:.2f}")
    for option, row in result.get("step_options", {}).items():
        print(f"step    STN-SL1 {option:<21} {row['img_s']:>8,.0f} img/s  {row['vs_eager']:.2f}x eager  "
              f"first step {row['first_step_s']:.1f}s")
    for cell, row in result.get("deep_step", {}).items():
        print(f"deep    {cell:<25} step {row['step_img_s']:>7,.0f} img/s  data {row['data_img_s']:>9,.0f} img/s  "
              f"data share {row['data_share']:.1%}")
    if "study_overhead" in result:
        s = result["study_overhead"]
        print(f"study   {s['trials']} trials of {s['mean_trial_s']:.0f}s  wall {s['wall_s']:.0f}s  trial work "
              f"{s['trial_work_s']:.0f}s over {s['slots']} slots  overhead {s['study_overhead']:.2f}  "
              f"(epochs {s['epoch_share']:.0%} of slot time); first trial at {s['first_trial_start_s']:.1f}s; "
              f"beyond the schedule floor of {s['schedule_floor_s']:.0f}s: {s['overhead_beyond_floor']:.3f} "
              f"(the floor itself leaves {s['share_floor_idle']:.3f} of slot time idle)")
    if "handwritten" in result.get("study_overhead", {}):
        s = result["study_overhead"]
        theirs = s["handwritten"]
        print(f"versus  ours {s['wall_s']:.0f}s ({s['trial_work_s']:.0f}s of trial work)  the hand-written Tune script "
              f"{theirs['wall_s']:.0f}s ({theirs['trial_work_s']:.0f}s)  ratio {s['versus_ratio']:.2f}  (MLflow runs: "
              f"ours {s['ours_records']['mlflow_runs']}, theirs {theirs['mlflow_runs']})")
    for storage, row in result.get("driver", {}).items():
        for run in row["runs"]:
            if "cpu_ms_per_result" in run:
                print(f"driver  {storage:<9} {run['results']:>6,} results  {run['results_per_s']:>6.0f} results/s  "
                      f"{run['cpu_ms_per_result']:.1f} CPU-ms/result")
        if row.get("flatness"):
            print(f"driver  {storage:<9} per-result cost, largest / middle size: {row['flatness']:.2f}")
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

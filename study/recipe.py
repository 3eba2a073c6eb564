"""``python -m study.recipe``: a grid of single trainings to find what makes an ST learn, by measurement.

A study searches hyper-parameters for the best *error*; whether a localisation network learns to
undo the distortion at all, and how many CPU-minutes that takes, is a question about training
curves. This runs the product of the given options as ``python -m trainables.train`` processes
(one thread each, ``--parallel`` at a time; a run that completed is never repeated, so a stopped
grid goes on with what is left, an interrupted training starting again), then tabulates the
per-epoch validation telemetry (``val_angle_slope``, ``val_pose_sd``) at fixed epochs and draws the
curves.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from trainables.outcome import Outcome
from trainables.train import RESULT_FILE
from trainables.train_config import TRAIN_DEFAULTS

AXES = ("variant", "optimizer", "lr", "momentum", "batch_size", "loc_lr_mult", "warmup_epochs", "lr_milestones",
        "st_transform", "precision", "seed")
ABBREVIATIONS = {"variant": "", "optimizer": "", "lr": "lr", "momentum": "m", "batch_size": "b", "loc_lr_mult": "loc",
                 "warmup_epochs": "wu", "lr_milestones": "ms", "st_transform": "", "precision": "", "seed": "s"}


def run_name(point: dict) -> str:
    parts = []
    for axis in AXES:
        value = point[axis]
        if axis == "lr_milestones":
            value = "-".join(f"{m:g}" for m in value) if value else "const"
        parts.append(f"{ABBREVIATIONS[axis]}{value:g}" if isinstance(value, float) else f"{ABBREVIATIONS[axis]}{value}")
    return "_".join(parts)


def grid(args: argparse.Namespace) -> list[dict]:
    """The product of the options; momentum only varies for SGD (Adam ignores it)."""
    points, seen = [], set()
    values = [getattr(args, axis) for axis in AXES if axis != "lr_milestones"]
    for combo in itertools.product(*values):
        point = dict(zip([a for a in AXES if a != "lr_milestones"], combo, strict=True))
        point["lr_milestones"] = tuple(args.lr_milestones)
        if point["optimizer"] == "adam":
            point["momentum"] = 0.0
        point["lr"] = point["lr"] if point["lr"] is not None else (1e-3 if point["optimizer"] == "adam" else TRAIN_DEFAULTS["lr"])
        name = run_name(point)
        if name not in seen:
            seen.add(name)
            points.append(point)
    return points


def command(point: dict, args: argparse.Namespace, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "trainables.train", "--dataset", args.dataset, "--epochs", str(args.epochs),
           "--threads", "1", "--test-passes", str(args.test_passes), "--out", str(out)]
    if args.train_size:
        cmd += ["--train-size", str(args.train_size)]
    if args.data_root:
        cmd += ["--data-root", args.data_root]
    for axis in AXES:
        flag = "--" + axis.replace("_", "-")
        value = point[axis]
        cmd += [flag, *[str(v) for v in value]] if axis == "lr_milestones" else [flag, str(value)]
    return cmd


def finished(directory: Path) -> bool:
    """A run that ended on its own (completed or diverged); a stopped one is run again."""
    path = directory / RESULT_FILE
    return path.exists() and json.loads(path.read_text()).get("status") in (Outcome.COMPLETED, Outcome.DIVERGED)


def run_grid(points: list[dict], args: argparse.Namespace, root: Path) -> None:
    pending = [p for p in points if not finished(root / run_name(p))]
    print(f"{len(points)} runs, {len(points) - len(pending)} already done, {args.parallel} at a time", flush=True)
    running: list[tuple[subprocess.Popen, str, float]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        _drive(pending, running, args, root, env)
    finally:  # Ctrl-C / SIGTERM of the grid: its trainings stop too (each keeps its finished epochs)
        signal.signal(signal.SIGTERM, previous)
        for proc, _, _ in running:
            if proc.poll() is None:
                proc.terminate()
        for proc, _, _ in running:
            proc.wait()


def _drive(pending: list[dict], running: list, args: argparse.Namespace, root: Path, env: dict) -> None:
    while pending or running:
        while pending and len(running) < args.parallel:
            point = pending.pop(0)
            name = run_name(point)
            (root / name).mkdir(parents=True, exist_ok=True)
            log = open(root / name / "train.log", "w")
            running.append((subprocess.Popen(command(point, args, root / name), stdout=log, stderr=subprocess.STDOUT,
                                             env=env), name, time.time()))
            print(f"started {name}", flush=True)
        time.sleep(2)
        for proc, name, started in list(running):
            if proc.poll() is not None:
                running.remove((proc, name, started))
                print(f"ended {name}: rc {proc.returncode}, {(time.time() - started) / 60:.1f} min", flush=True)


def table(root: Path, checkpoints: list[int]) -> pd.DataFrame:
    """One row per finished run: slope / pose SD / val error at the checkpoint epochs, minutes, test metrics."""
    rows = []
    for path in sorted(root.glob(f"*/{RESULT_FILE}")):
        result = json.loads(path.read_text())
        cfg, history = result["config"], result["history"]
        row = {axis: cfg.get(axis) for axis in AXES}
        row["lr_milestones"] = "-".join(f"{m:g}" for m in cfg["lr_milestones"]) or "const"
        row["lr"], row["loc_lr_mult"] = f"{cfg['lr']:g}", f"{cfg['loc_lr_mult']:g}"  # not rounded by the table's floatfmt
        row["status"] = result["status"]
        by_epoch = {h["epoch"]: h for h in history}
        for epoch in checkpoints:
            h = by_epoch.get(epoch, {})
            row[f"slope@{epoch}"] = h.get("val_angle_slope")
            row[f"poseSD@{epoch}"] = h.get("val_pose_sd")
            row[f"val%@{epoch}"] = 100 * h["val_error"] if "val_error" in h else None
        row["minutes"] = result.get("wall_seconds", 0) / 60
        metrics = result["metrics"]
        row["test%"] = 100 * metrics["test_error"] if "test_error" in metrics else None
        row["slope"], row["poseSD"] = metrics.get("angle_slope"), metrics.get("pose_sd")
        row["run"] = path.parent.name
        rows.append(row)
    return pd.DataFrame(rows)


def curves(root: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    histories = {}
    for path in sorted(root.glob(f"*/{RESULT_FILE}")):
        history = json.loads(path.read_text())["history"]
        if history:  # every run's val error; STN runs also their alignment
            histories[path.parent.name] = history
    panels = [("val_angle_slope", 1, "val angle slope (−1 = undoes rotation)"), ("val_pose_sd", 1, "val pose SD"),
              ("val_error", 100, "val error %"), ("val_theta_angle_sd", 1, "θ's angle: SD over val images (°)"),
              ("val_theta_log2_scale_sd", 1, "θ's log2 scale: SD over val images"),
              ("val_theta_shear_rms", 1, "θ's shear: RMS over val images"),
              ("val_loc_alive", 100, "localisation head units alive (%)")]
    # a panel only where something moved (a rotation-parameterised θ has no scale or shear to spread)
    panels = [p for p in panels if any(abs(h.get(p[0]) or 0.0) > 1e-6 for hs in histories.values() for h in hs)]
    by_step = all("step" in h for hs in histories.values() for h in hs)  # runs of different train sizes compare per step
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, grid = plt.subplots(rows, columns, figsize=(5.4 * columns, 4.2 * rows), squeeze=False)
    axes = grid.flatten()
    for i, (name, history) in enumerate(histories.items()):
        xs, color = [h["step" if by_step else "epoch"] for h in history], plt.cm.tab10(i % 10)  # one colour per run
        for ax, (key, scale, _) in zip(axes, panels, strict=False):
            if any(h.get(key) is not None for h in history):
                ax.plot(xs, [scale * h.get(key, float("nan")) for h in history], lw=0.8, color=color, label=name)
    for ax, (key, scale, title) in zip(axes, panels, strict=False):  # a panel only for what was measured (no slope for translation)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step (batch)" if by_step else "epoch")
        ax.grid(alpha=0.3)
        values = [scale * h[key] for hs in histories.values() for h in hs if h.get(key) is not None]
        if values and key != "val_angle_slope":  # a divergence spike must not flatten every other curve
            ax.set_ylim(min(0.0, min(values)), float(np.percentile(values, 99.5)) * 1.05)
    for ax in axes[len(panels):]:
        ax.axis("off")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    d = TRAIN_DEFAULTS  # where the recipe search keeps TrainConfig's value; its own choices are spelt out
    p = argparse.ArgumentParser(prog="python -m study.recipe", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default=d["dataset"])
    p.add_argument("--variant", nargs="+", default=["STN-C0", "STN-SL1"])
    p.add_argument("--optimizer", nargs="+", default=["adam"])
    p.add_argument("--lr", nargs="+", type=float, default=[None], help=f"default: 1e-3 for Adam, {d['lr']:g} for SGD")
    p.add_argument("--momentum", nargs="+", type=float, default=[0.9], help="SGD only")
    p.add_argument("--batch-size", nargs="+", type=int, default=[d["batch_size"]])
    p.add_argument("--loc-lr-mult", nargs="+", type=float, default=[d["loc_lr_mult"]])
    p.add_argument("--warmup-epochs", nargs="+", type=float, default=[d["warmup_epochs"]])
    p.add_argument("--lr-milestones", nargs="*", type=float, default=[], help="one schedule for all (default constant)")
    p.add_argument("--st-transform", nargs="+", default=[d["st_transform"]])
    p.add_argument("--precision", nargs="+", default=[d["precision"]])
    p.add_argument("--seed", nargs="+", type=int, default=[1])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--data-root", default=None, help="torchvision's MNIST files (default: the embedded subset)")
    p.add_argument("--test-passes", type=int, default=2)
    p.add_argument("--parallel", type=int, default=2, help="trainings at once (one CPU thread each)")
    p.add_argument("--checkpoints", nargs="+", type=int, default=[10, 25, 50, 100, 200])
    p.add_argument("--out", default="runs/recipe", help="one folder per run; result.json, train.log")
    p.add_argument("--table-only", action="store_true", help="tabulate what is there, start nothing")
    return p


def _terminate(signum, _frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        run_grid(grid(args), args, root)
    frame = table(root, args.checkpoints)
    if frame.empty:
        print("no finished runs yet")
        return 0
    frame = frame.dropna(axis=1, how="all")
    shown = frame.drop(columns=["precision", "lr_milestones"] if frame["precision"].eq("fp32").all() and
                       frame["lr_milestones"].eq("const").all() else [])
    shown = shown.map(lambda v: f"{v:.2f}" if isinstance(v, float) else ("" if v is None else v))
    markdown = shown.to_markdown(index=False, disable_numparse=True)
    (root / "recipe.md").write_text(markdown)
    frame.to_csv(root / "recipe.csv", index=False)
    curves(root, root / "recipe_curves.png")
    print(markdown)
    print(f"wrote {root / 'recipe.md'}, recipe.csv, recipe_curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

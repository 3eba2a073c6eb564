"""The report's figures from logged figure data: Fig. 3 angle plots, Fig. 2 aligned examples, curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from study.tracking.contract import Stage, Tag
from trainables.figures import draw_angle_plot
from trainables.metrics import deming

DPI = 100


def fig3_angle_plots(path: Path, panels: dict[str, dict]) -> Path | None:
    """One panel per variant on shared axes: predicted angle vs applied rotation, Deming line."""
    panels = {k: v for k, v in panels.items() if v and "angle_applied" in v}
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8), dpi=DPI, squeeze=False,
                             sharex=True, sharey=True)
    for ax, (variant, data) in zip(axes[0], panels.items(), strict=False):
        slope, intercept = deming(data["angle_applied"], data["angle_predicted"])
        draw_angle_plot(ax, data["angle_applied"], data["angle_predicted"], slope, intercept, variant)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def fig2_aligned_examples(path: Path, dataset: str, panels: dict[str, dict], digits: int = 2) -> Path | None:
    """Rows: the transformed inputs, then each variant's ST output (for CX its mean feature map)."""
    with_inputs = [v for v in panels.values() if v and "example_inputs" in v]
    if not with_inputs:
        return None
    inputs = with_inputs[0]["example_inputs"][:digits]  # (digits, transforms, S, S): same draws for every run
    outputs = {k: v["example_st_outputs"][:digits] for k, v in panels.items() if v and "example_st_outputs" in v}
    columns = inputs.shape[0] * inputs.shape[1]
    rows = 1 + len(outputs)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.8, rows * 0.9 + 0.4), dpi=DPI, squeeze=False)
    for r, (label, data) in enumerate([("input", inputs), *outputs.items()]):
        tiles = data.reshape(-1, *data.shape[2:])
        for c in range(columns):
            axes[r, c].imshow(tiles[c], cmap="gray")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"{dataset}: the same digits under several transforms and each variant's ST output", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def learning_curves_figure(path: Path, curves: pd.DataFrame) -> Path | None:
    """Validation error per epoch, one panel per cell; final-stage runs bold, search trials faint."""
    if curves.empty:
        return None
    cells = list(dict.fromkeys(curves["cell"]))
    cols = min(3, len(cells))
    rows = int(np.ceil(len(cells) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), dpi=DPI, squeeze=False, sharey=True)
    for ax, cell in zip(axes.flat, cells, strict=False):
        for _run_id, run in curves[curves["cell"] == cell].groupby("run_id"):
            final = (run[Tag.STAGE] == Stage.FINAL).all()
            ax.plot(run["epoch"], 100 * run["val_error"], lw=1.6 if final else 0.7, alpha=1.0 if final else 0.35,
                    color="tab:blue" if final else "tab:gray")
        ax.set_title(cell, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val error (%)")
    for ax in list(axes.flat)[len(cells):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def alignment_curves_figure(path: Path, dataset: str, curves: dict[str, pd.DataFrame]) -> Path | None:
    """Validation alignment per epoch, one line per variant: mean over its reported runs, band = min–max.

    Shows whether and when each ST starts to undo the distortion (pose SD falls; for rotations the
    angle slope heads for −1), which the end-of-trial numbers alone cannot.
    """
    metrics = [m for m in ("val_angle_slope", "val_pose_sd") if any(m in c for c in curves.values() if not c.empty)]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.6), dpi=DPI, squeeze=False)
    titles = {"val_angle_slope": "val angle slope (−1 = undoes the rotation)", "val_pose_sd": "val pose SD (lower = aligned)"}
    for ax, metric in zip(axes[0], metrics, strict=False):
        for variant, frame in curves.items():
            if frame.empty or metric not in frame:
                continue
            by_epoch = frame.dropna(subset=[metric]).groupby("epoch")[metric]
            mean, low, high = by_epoch.mean(), by_epoch.min(), by_epoch.max()
            n = frame["run_id"].nunique()
            line, = ax.plot(mean.index, mean.values, lw=1.5, label=f"{variant} (n={n})")
            ax.fill_between(mean.index, low.values, high.values, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(f"{dataset}: {titles[metric]}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def error_vs_depth_figure(path: Path, dataset: str, grid: pd.DataFrame, cnn: list[float] | None = None) -> Path | None:
    """Test error against ST depth, one line per sharing mode (C, SL, DL, iterated), error bars = std over seeds.

    The ICPR question in one picture: does the error of each sharing mode rise or fall as the ST moves deeper.
    """
    grid = grid.dropna(subset=["mean"]) if not grid.empty else grid
    if grid.empty:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=DPI)
    for row, frame in grid.groupby("row", sort=False):
        frame = frame.sort_values("depth")
        n = ", ".join(str(v) for v in sorted(set(frame["n"])))
        ax.errorbar(frame["depth"], frame["mean"], yerr=frame["sd"].fillna(0.0), marker="o", capsize=3, lw=1.5,
                    ls="--" if frame["iterations"].iloc[0] > 1 else "-", label=f"{row} (n={n})")
    if cnn:
        ax.axhline(float(np.mean(cnn)), color="gray", ls=":", lw=1.2, label=f"CNN (n={len(cnn)})")
    ax.set_xticks(sorted(grid["depth"].unique()))
    ax.set_xlabel("ST depth X (classifier blocks before the ST)")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"{dataset}: error vs depth per sharing mode", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

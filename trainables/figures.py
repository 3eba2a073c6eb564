"""Per-trial figures (matplotlib, PNG): the Fig. 3 angle plot and the Fig. 2 aligned examples.

matplotlib is imported where a figure is drawn: the file names here are read by the driver and the
tracking code, which draw nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ANGLE_BINS, ANGLE_LIMIT = 110, 110.0


def angle_line_label(slope: float, intercept: float) -> str:
    sign = "+" if intercept >= 0 else "−"
    return f"{slope:.2f}·x {sign} {abs(intercept):.1f}"


def draw_angle_plot(ax, applied, predicted, slope: float, intercept: float, title: str) -> None:
    """2-D histogram of predicted vs applied angle (110 bins on ±110°) with the Deming line."""
    edges = np.linspace(-ANGLE_LIMIT, ANGLE_LIMIT, ANGLE_BINS + 1)
    hist, _, _ = np.histogram2d(applied, predicted, bins=[edges, edges])
    ax.imshow(np.log1p(hist.T), origin="lower", extent=[-ANGLE_LIMIT, ANGLE_LIMIT, -ANGLE_LIMIT, ANGLE_LIMIT],
              cmap="viridis", aspect="equal")
    xs = np.array([-ANGLE_LIMIT, ANGLE_LIMIT])
    if np.isfinite(slope):
        ax.plot(xs, slope * xs + intercept, color="tab:red", lw=1.5, label=angle_line_label(slope, intercept))
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlim(-ANGLE_LIMIT, ANGLE_LIMIT)
    ax.set_ylim(-ANGLE_LIMIT, ANGLE_LIMIT)
    ax.set_xlabel("applied rotation (°)")
    ax.set_ylabel("predicted angle (°)")
    ax.set_title(title, fontsize=10)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def angle_plot(path: str | Path, applied, predicted, slope: float, intercept: float, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    draw_angle_plot(ax, applied, predicted, slope, intercept, title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def example_grid(path: str | Path, inputs: np.ndarray, outputs: np.ndarray | None, title: str) -> Path:
    """Rows: digits; columns: the digit under several transforms, then (if any) the ST's outputs."""
    plt = _pyplot()
    digits, transforms = inputs.shape[:2]
    columns = transforms * (2 if outputs is not None else 1)
    fig, axes = plt.subplots(digits, columns, figsize=(columns * 0.9, digits * 0.9), dpi=100, squeeze=False)
    for row in range(digits):
        for col in range(columns):
            source = inputs if col < transforms else outputs
            axes[row, col].imshow(source[row, col % transforms], cmap="gray")
            axes[row, col].set_axis_off()
    if outputs is not None:
        axes[0, 0].set_title("input", fontsize=8, loc="left")
        axes[0, transforms].set_title("ST output", fontsize=8, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


FIGURES_FILE, ANGLE_PLOT_FILE, EXAMPLES_FILE = "figures.npz", "angle_plot.png", "aligned_examples.png"


def write_trial_figures(directory: str | Path, figures: dict, metrics: dict, title: str) -> list[Path]:
    """Write the raw figure data (figures.npz) and the PNGs a trial's run shows."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if figures:
        np.savez_compressed(directory / FIGURES_FILE, **figures)
        written.append(directory / FIGURES_FILE)
    if "angle_applied" in figures:
        written.append(angle_plot(directory / ANGLE_PLOT_FILE, figures["angle_applied"], figures["angle_predicted"],
                                  metrics.get("angle_slope", float("nan")), metrics.get("angle_intercept", 0.0), title))
    if "example_inputs" in figures:
        written.append(example_grid(directory / EXAMPLES_FILE, figures["example_inputs"],
                                    figures.get("example_st_outputs"), title))
    return written

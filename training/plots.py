"""Diagnostic figures, like the seeds' notebooks draw: the loss curve and predicted vs actual.

Uses ``matplotlib.figure.Figure`` directly (no pyplot), which renders with the Agg
canvas and needs no display or global backend setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_plots(
    directory: Path,
    losses: Sequence[float],
    predictions: np.ndarray,
    targets: np.ndarray,
    target_names: Sequence[str],
    units: Sequence[str],
) -> list[Path]:
    from matplotlib.figure import Figure  # imported only when plots are asked for

    directory.mkdir(parents=True, exist_ok=True)
    written = []

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(np.arange(1, len(losses) + 1), losses)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (MSE, in the optimised scale)")
    ax.set_title("Loss curve")
    written.append(directory / "loss_curve.png")
    fig.savefig(written[-1], dpi=100)

    for j, (name, unit) in enumerate(zip(target_names, units, strict=True)):
        fig = Figure(figsize=(5, 5), layout="constrained")
        ax = fig.add_subplot()
        ax.scatter(targets[:, j], predictions[:, j], s=14)
        lo = float(min(targets[:, j].min(), predictions[:, j].min()))
        hi = float(max(targets[:, j].max(), predictions[:, j].max()))
        ax.plot([lo, hi], [lo, hi], "r--", linewidth=1, label="perfect prediction")
        ax.set_xlabel(f"actual {name} ({unit})")
        ax.set_ylabel(f"predicted {name} ({unit})")
        ax.set_title(f"Predicted vs actual: {name}")
        ax.legend(loc="upper left")
        written.append(directory / f"predicted_vs_actual_{name}.png")
        fig.savefig(written[-1], dpi=100)
    return written

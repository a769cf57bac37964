"""Charts (PNG, matplotlib): the render's metrics and the training curves."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from sign_vq.evaluation.names import metric_name
from sign_vq.fileio import png_figure
from sign_vq.poses import skeleton


def plot_metrics(result: dict[str, float], path: Path) -> None:
    """Bars of the per-part error, model vs trivial reference (shoulder widths), as a PNG."""
    parts = list(skeleton.PARTS)
    x = np.arange(len(parts))
    with png_figure(path, figsize=(6, 3.2)) as (_, axis):
        for shift, kind, label in ((-0.2, "error", "model"), (0.2, "reference", "trivial reference (pose mean)")):
            axis.bar(x + shift, [result[metric_name(kind, p)] for p in parts], 0.4, label=label)
        axis.set_xticks(x, [p.replace("_", " ") for p in parts])
        axis.set(ylabel="mean L2 error (shoulder widths)", title="reconstruction error per part")
        axis.legend()


def plot_curves(metrics_csv: Path, output: Path) -> None:
    """Training/validation loss and codebook utilization over steps, as a PNG."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(metrics_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            for key in ("train/loss", "val/loss", "val/codebook_utilization"):
                if row.get(key):
                    series.setdefault(key, []).append((int(row["step"]), float(row[key])))
    with png_figure(output, figsize=(10, 3.5), ncols=2) as (_, (left, right)):
        for key in ("train/loss", "val/loss"):
            if key in series:
                left.plot(*zip(*series[key]), label=key)
        left.set(xlabel="step", ylabel="loss (shoulder widths²)", yscale="log", title="reconstruction loss")
        if left.lines:
            left.legend()
        if "val/codebook_utilization" in series:
            right.plot(*zip(*series["val/codebook_utilization"]), marker="o")
        right.set(xlabel="step", ylabel="fraction of codes used", ylim=(0, 1.05), title="codebook utilization")

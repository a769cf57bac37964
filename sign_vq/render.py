"""Validation render: `sign-vq render --model MODEL --archive ARCHIVE --output DIR [--num-poses N] [--max-frames M]`.

Writes exactly ``DIR/metrics.json``, ``DIR/metrics.csv`` (its table), ``DIR/metrics.png`` and ``DIR/videos/``
(``<safe id>.mp4`` and ``.gif`` per rendered pose: original left, reconstruction right, at the pose's own fps, in its
original coordinates via the archive entry's ``center``/``scale``; the reconstruction is drawn at the points the
original has). Metrics cover the whole validation split (``split == 'val'``; the train split when there is none),
each pose reconstructed whole (see :mod:`sign_vq.evaluation`; formulas in :mod:`sign_vq.metrics`).
:class:`sign_vq.callbacks.RenderCallback` runs the same during training.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sign_vq import skeleton
from sign_vq.data import split_entries
from sign_vq.errors import UserError
from sign_vq.evaluation import Reconstruction, add_pose, evaluating, new_metrics, reconstructions
from sign_vq.fileio import atomic_dir, atomic_open, png_figure, write_json
from sign_vq.metrics import metrics_table
from sign_vq.model import PoseFSQAutoencoder, load_on
from sign_vq.posezip import PoseZip
from sign_vq.preprocess import denormalize

log = logging.getLogger(__name__)
VIDEOS = "videos"  # the folder of videos inside the render folder
UNITS = "errors: mean per-point L2 in shoulder widths (error_px_*: pixels); reference: each pose's mean"


def safe_id(pose_id: str) -> str:
    """A file name for a pose id: characters other than letters, digits, '.', '-' and '_' become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", pose_id).strip("._") or "pose"


def unique_names(pose_ids: list[str]) -> list[str]:
    """A distinct file name per pose id: its :func:`safe_id`, with '_' appended while it clashes."""
    names: list[str] = []
    for pose_id in pose_ids:
        name = safe_id(pose_id)
        while name in names:
            name += "_"
        names.append(name)
    return names


def render_entries(archive: PoseZip) -> tuple[str, list[dict]]:
    """The validation entries, or the training entries when the archive has no validation split."""
    val = split_entries(archive, "val")
    if val:
        return "val", val
    log.warning("%s: no validation poses; rendering the training split", archive.path)
    return "train", split_entries(archive, "train") or list(archive.entries)


def _frame_size(entry: dict, *poses: np.ndarray) -> tuple[int, int]:
    """The entry's frame size, or one that holds every point when the file had none."""
    width, height = int(entry.get("width") or 0), int(entry.get("height") or 0)
    if width > 0 and height > 0:
        return width, height
    finite = np.concatenate([p[..., :2].reshape(-1, 2) for p in poses])
    finite = finite[np.isfinite(finite).all(axis=1)]
    high = np.ceil(finite.max(axis=0) + 10) if len(finite) else np.array([512, 512])
    return int(max(high[0], 2)), int(max(high[1], 2))


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def plot_metrics(result: dict[str, float], path: Path) -> None:
    """Bars of the per-part error, model vs trivial reference (shoulder widths), as a PNG."""
    parts = list(skeleton.PARTS)
    x = np.arange(len(parts))
    with png_figure(path, figsize=(6, 3.2)) as (_, axis):
        axis.bar(x - 0.2, [result[f"error_{p}"] for p in parts], 0.4, label="model")
        axis.bar(x + 0.2, [result[f"reference_{p}"] for p in parts], 0.4, label="trivial reference (pose mean)")
        axis.set_xticks(x, [p.replace("_", " ") for p in parts])
        axis.set(ylabel="mean L2 error (shoulder widths)", title="reconstruction error per part")
        axis.legend()


def write_video(pose: Reconstruction, folder: Path, name: str, max_frames: int, gif: bool) -> dict:
    """``folder/name.mp4`` (and ``.gif``): the pose next to its reconstruction in original coordinates; returns its
    entry in ``metrics.json`` (paths relative to the render folder, in which ``folder`` becomes ``videos/``)."""
    from sign_vq import visualize  # the only place video libraries are imported

    entry = pose.entry
    original = denormalize(pose.data, entry["center"], entry["scale"]).astype(np.float32)
    reconstruction = denormalize(pose.recon, entry["center"], entry["scale"]).astype(np.float32)
    observed = ~pose.mask  # the reconstruction is drawn where the original was observed: both show the same points
    fps = float(entry["fps"])
    frames = visualize.render_comparison(
        original, reconstruction, observed, fps, _frame_size(entry, original[observed], reconstruction),
        folder / f"{name}.mp4", folder / f"{name}.gif" if gif else None, max_frames,
    )
    return {"id": entry["id"], "mp4": f"{VIDEOS}/{name}.mp4", "gif": f"{VIDEOS}/{name}.gif" if gif else None,
            "fps": fps, "frames": frames}


@dataclass
class Report:
    """What one render measured and drew (the content of ``metrics.json``); writes and logs itself."""

    model: dict
    archive: str
    split: str
    poses: int
    metrics: dict[str, float]
    table: list[dict]
    videos: list[dict]

    def as_dict(self) -> dict:
        return {"model": self.model, "archive": self.archive, "split": self.split, "poses": self.poses,
                "units": UNITS, "metrics": self.metrics, "table": self.table, "videos": self.videos}

    def write(self, output: Path) -> None:
        """``output/metrics.json``, ``metrics.csv`` (the table) and ``metrics.png``, each atomically."""
        write_json(output / "metrics.json", _json_safe(self.as_dict()), indent=2)
        with atomic_open(output / "metrics.csv") as handle:
            writer = csv.DictWriter(handle, fieldnames=["metric", "model", "reference", "ratio"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.table)
        plot_metrics(self.metrics, output / "metrics.png")

    def log(self, output: Path) -> None:
        result = self.metrics
        log.info(
            "%d %s poses: error body %.3f face %.3f hands %.3f/%.3f (reference ratio %.2f/%.2f/%.2f/%.2f), "
            "codebook use %.1f%%; %d videos in %s",
            self.poses, self.split, *(result[f"error_{p}"] for p in skeleton.PARTS),
            *(result[f"ratio_{p}"] for p in skeleton.PARTS), 100 * result["codebook_utilization"],
            len(self.videos), output / VIDEOS,
        )


def render(
    model: PoseFSQAutoencoder,
    archive: PoseZip,
    output: Path,
    *,
    num_poses: int = 4,
    max_frames: int = 200,
    gif: bool = True,
    metric_poses: int | None = None,
) -> Report:
    """Write ``output/metrics.json``, ``metrics.csv``, ``metrics.png`` and ``videos/`` (replaced whole).

    Metrics cover the first ``metric_poses`` poses of the split (None: all of it), videos the first ``num_poses``.
    """
    split, entries = render_entries(archive)
    if not entries:
        raise UserError(f"{archive.path}: no poses to render")
    measured = len(entries) if metric_poses is None else min(metric_poses, len(entries))
    names = unique_names([entry["id"] for entry in entries[:num_poses]])
    metrics = new_metrics(model)
    videos: list[dict] = []
    observed = 0
    with evaluating(model), atomic_dir(output / VIDEOS) as folder:
        for index, pose in enumerate(reconstructions(model, archive, entries[:max(measured, len(names))])):
            if index < measured:
                add_pose(metrics, pose)
                observed += int(np.count_nonzero(~pose.mask))
            if index < len(names):
                videos.append(write_video(pose, folder, names[index], max_frames, gif))
        if not observed:  # every error would read 0.000: refuse rather than report it
            raise UserError(
                f"{archive.path}: nothing observed in the {measured} {split} pose(s) measured (every keypoint is "
                "masked); nothing written — rebuild the archive from poses whose keypoints were detected"
            )
    result = metrics.compute()
    model_info = {"codebook_size": model.codebook_size, "num_codebooks": model.num_codebooks,
                  "codes_per_frame": model.codes_per_frame, "bits_per_frame": model.bits_per_frame}
    report = Report(model_info, str(archive.path), split, measured, result,
                    metrics_table(result, model.codebook_size), videos)
    report.write(output)
    report.log(output)
    return report


def run(args: argparse.Namespace) -> int:
    if args.num_poses < 0 or args.max_frames < 1 or (args.metric_poses or 0) < 0:
        raise UserError("--num-poses and --metric-poses must be >= 0, --max-frames >= 1")
    model = load_on(args.model, args.device)
    render(
        model, PoseZip(args.archive), args.output,
        num_poses=args.num_poses, max_frames=args.max_frames, gif=not args.no_gif, metric_poses=args.metric_poses or None,
    )
    return 0


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("render")

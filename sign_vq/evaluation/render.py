"""The validation render: metrics over a split of an archive, each pose reconstructed whole, and side-by-side
videos of a few poses (original | reconstruction) in their original coordinates. `sign-vq render` and
:class:`sign_vq.training.callbacks.RenderCallback` both run :func:`render`."""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sign_vq.config import RenderConfig
from sign_vq.errors import UserError
from sign_vq.evaluation.charts import plot_metrics
from sign_vq.evaluation.metrics import metrics_table
from sign_vq.evaluation.names import metric_name
from sign_vq.evaluation.reconstruction import Reconstruction, add_pose, evaluating, new_metrics, reconstructions
from sign_vq.fileio import atomic_dir, atomic_open, write_json
from sign_vq.formats.posezip import PoseZip
from sign_vq.model.network import PoseFSQAutoencoder
from sign_vq.poses import skeleton
from sign_vq.poses.preprocess import denormalize

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
    val = archive.split("val")
    if val:
        return "val", val
    log.warning("%s: no validation poses; rendering the training split", archive.path)
    return "train", archive.split("train") or list(archive.entries)


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


def write_video(pose: Reconstruction, folder: Path, name: str, max_frames: int, gif: bool) -> dict:
    """``folder/name.mp4`` (and ``.gif``): the pose next to its reconstruction in original coordinates; returns its
    entry in ``metrics.json`` (paths relative to the render folder, in which ``folder`` becomes ``videos/``)."""
    from sign_vq.evaluation import videos  # video libraries: imported only to write videos

    entry = pose.entry
    original = denormalize(pose.data, entry["center"], entry["scale"]).astype(np.float32)
    reconstruction = denormalize(pose.recon, entry["center"], entry["scale"]).astype(np.float32)
    observed = ~pose.mask  # the reconstruction is drawn where the original was observed: both show the same points
    fps = float(entry["fps"])
    frames = videos.render_comparison(
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
            self.poses, self.split, *(result[metric_name("error", p)] for p in skeleton.PARTS),
            *(result[metric_name("ratio", p)] for p in skeleton.PARTS), 100 * result["codebook_utilization"],
            len(self.videos), output / VIDEOS,
        )


def render(
    model: PoseFSQAutoencoder,
    archive: PoseZip,
    output: Path,
    settings: RenderConfig,
) -> Report:
    """Write ``output/metrics.json``, ``metrics.csv``, ``metrics.png`` and ``videos/`` (replaced whole).

    Metrics cover the first ``settings.metric_poses`` poses of the split (0: all of it), videos the first
    ``settings.num_poses`` (at most ``settings.max_frames`` frames each; a GIF too when ``settings.gif``).
    """
    split, entries = render_entries(archive)
    if not entries:
        raise UserError(f"{archive.path}: no poses to render")
    measured = min(settings.metric_poses or len(entries), len(entries))
    names = unique_names([entry["id"] for entry in entries[:settings.num_poses]])
    metrics = new_metrics(model)
    videos: list[dict] = []
    observed = 0
    with evaluating(model), atomic_dir(output / VIDEOS) as folder:
        for index, pose in enumerate(reconstructions(model, archive, entries[:max(measured, len(names))])):
            if index < measured:
                add_pose(metrics, pose)
                observed += int(np.count_nonzero(~pose.mask))
            if index < len(names):
                videos.append(write_video(pose, folder, names[index], settings.max_frames, settings.gif))
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

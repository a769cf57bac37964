"""Validation render: `sign-vq render --model MODEL --archive ARCHIVE --output DIR [--num-poses N] [--max-frames M]`.

Writes exactly ``DIR/metrics.json``, ``DIR/metrics.csv`` (its table), ``DIR/metrics.png`` and ``DIR/videos/``
(``<safe id>.mp4`` and ``.gif`` per rendered pose: original left, reconstruction right, at the pose's own fps, in its original coordinates via the
archive entry's ``center``/``scale``; the reconstruction is drawn at the points the original has). Metrics cover
the whole validation split (``split == 'val'``; the train split when there is none), each pose reconstructed whole
(in windows of the model's ``max_frames``) so the trivial reference is the pose's own mean; see
:mod:`sign_vq.metrics` for the formulas. :class:`RenderCallback` runs the same during training every
``render_every`` steps on rank zero and logs to W&B when a ``WandbLogger`` is present.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from tqdm import tqdm

from sign_vq import inference, skeleton
from sign_vq.errors import UserError
from sign_vq.data import split_entries
from sign_vq.fileio import atomic_open, atomic_path, current_umask
from sign_vq.metrics import ReconstructionMetrics, metrics_table
from sign_vq.model import PoseFSQAutoencoder
from sign_vq.posezip import PoseZip
from sign_vq.preprocess import denormalize

HELP = "render validation videos (original | reconstruction) and reconstruction metrics"
log = logging.getLogger(__name__)


def safe_id(pose_id: str) -> str:
    """A file name for a pose id: characters other than letters, digits, '.', '-' and '_' become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", pose_id).strip("._") or "pose"


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = list(skeleton.PARTS)
    x = np.arange(len(parts))
    figure, axis = plt.subplots(figsize=(6, 3.2))
    axis.bar(x - 0.2, [result[f"error_{p}"] for p in parts], 0.4, label="model")
    axis.bar(x + 0.2, [result[f"reference_{p}"] for p in parts], 0.4, label="trivial reference (pose mean)")
    axis.set_xticks(x, [p.replace("_", " ") for p in parts])
    axis.set(ylabel="mean L2 error (shoulder widths)", title="reconstruction error per part")
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


@torch.no_grad()
def reconstructions(
    model: PoseFSQAutoencoder, archive: PoseZip, entries: Iterable[dict]
) -> Iterator[tuple[dict, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``(entry, data, mask, reconstruction, codes)`` of each whole pose (the model runs on windows of it)."""
    for entry in entries:
        pose = archive.read(entry)
        mask = np.ma.getmaskarray(pose).any(axis=-1)
        data = np.ma.filled(pose.astype(np.float32), 0.0)
        recon, codes = inference.reconstruct_array(model, data, mask)
        yield entry, data, mask, recon, codes


def add_pose(
    metrics: ReconstructionMetrics, entry: dict, data: np.ndarray, mask: np.ndarray, recon: np.ndarray, codes: np.ndarray
) -> None:
    """Add one whole pose to ``metrics`` (its reference is the pose's own mean; pixels via its shoulder width)."""
    metrics.update(
        torch.from_numpy(recon)[None],
        torch.from_numpy(data)[None],
        torch.from_numpy(~mask)[None],
        torch.from_numpy(codes)[None],
        scale=torch.tensor([float(entry["scale"])]),
    )


def measure(model: PoseFSQAutoencoder, archive: PoseZip, entries: Iterable[dict]) -> dict[str, float]:
    """The metrics of ``model`` (in eval mode) over whole poses of ``archive`` (what `render` reports, no videos)."""
    metrics = ReconstructionMetrics(model.codebook_size, model.bits_per_frame)
    for item in tqdm(reconstructions(model, archive, entries), desc="measure", unit="pose", leave=False, disable=None):
        add_pose(metrics, *item)
    return metrics.compute()


@torch.no_grad()
def render(
    model: PoseFSQAutoencoder,
    archive: PoseZip,
    output: Path,
    *,
    num_poses: int = 4,
    max_frames: int = 200,
    gif: bool = True,
    metric_poses: int | None = None,
) -> dict:
    """Write ``output/metrics.json``, ``metrics.png`` and ``videos/``; returns the metrics.json content.

    ``metric_poses`` limits the metrics to the first poses of the split (None: all of it).
    """
    from sign_vq import visualize  # the only place video libraries are imported

    was_training = model.training
    model.eval()
    try:
        split, entries = render_entries(archive)
        if not entries:
            raise UserError(f"{archive.path}: no poses to render")
        metrics = ReconstructionMetrics(model.codebook_size, model.bits_per_frame)
        output.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".videos.", dir=output))
        staging.chmod(0o777 & ~current_umask())  # mkdtemp makes it private; give videos/ normal permissions
        videos: list[dict] = []
        names: set[str] = set()
        try:
            measured = entries if metric_poses is None else entries[:metric_poses]
            rendered = entries[:num_poses]
            measured_ids, rendered_ids = {id(e) for e in measured}, {id(e) for e in rendered}
            unique = {id(e): e for e in [*measured, *rendered]}.values()
            for entry, data, mask, recon, codes in reconstructions(model, archive, unique):
                if id(entry) in measured_ids:
                    add_pose(metrics, entry, data, mask, recon, codes)
                if id(entry) in rendered_ids:
                    videos.append(_render_video(visualize, entry, data, mask, recon, staging, names, max_frames, gif))
            final = output / "videos"
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        result = metrics.compute()
        report = {
            "model": {
                "codebook_size": model.codebook_size,
                "num_codebooks": model.num_codebooks,
                "bits_per_frame": model.bits_per_frame,
            },
            "archive": str(archive.path),
            "split": split,
            "poses": len(measured),
            "units": "errors: mean per-point L2 in shoulder widths (error_px_*: pixels); reference: each pose's mean",
            "metrics": result,
            "table": metrics_table(result, model.codebook_size),
            "videos": videos,
        }
        with atomic_open(output / "metrics.json") as handle:
            json.dump(_json_safe(report), handle, indent=2)
        with atomic_open(output / "metrics.csv", "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=["metric", "model", "reference", "ratio"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(report["table"])
        plot_metrics(result, output / "metrics.png")
        log.info(
            "%d %s poses: error body %.3f face %.3f hands %.3f/%.3f (reference ratio %.2f/%.2f/%.2f/%.2f), "
            "codebook use %.1f%%; %d videos in %s",
            len(measured), split, *(result[f"error_{p}"] for p in skeleton.PARTS),
            *(result[f"ratio_{p}"] for p in skeleton.PARTS), 100 * result["codebook_utilization"],
            len(videos), output / "videos",
        )
        return report
    finally:
        model.train(was_training)


def _render_video(visualize, entry, data, mask, recon, folder: Path, names: set[str], max_frames: int, gif: bool):
    name = safe_id(entry["id"])
    while name in names:
        name += "_"
    names.add(name)
    original = denormalize(data, entry["center"], entry["scale"]).astype(np.float32)
    reconstruction = denormalize(recon, entry["center"], entry["scale"]).astype(np.float32)
    width, height = _frame_size(entry, original[~mask], reconstruction)
    fps = float(entry["fps"])
    left = inference.make_pose(original, (~mask).astype(np.float32), fps, width, height)
    # the reconstruction is drawn where the original was observed, so both panels show the same points
    right = inference.make_pose(reconstruction, (~mask).astype(np.float32), fps, width, height)
    frames = visualize.render_comparison(
        left, right, folder / f"{name}.mp4", folder / f"{name}.gif" if gif else None, max_frames
    )
    return {
        "id": entry["id"],
        "mp4": f"videos/{name}.mp4",
        "gif": f"videos/{name}.gif" if gif else None,
        "fps": fps,
        "frames": frames,
    }


class RenderCallback(Callback):
    """Every ``every_n_steps`` training steps (rank zero only): render into ``output/step-<N>/`` and log it.

    Metrics go to every logger as ``render/<key>``; with a ``WandbLogger`` the mp4 videos are logged as
    ``wandb.Video(path, format="mp4")``. ``every_n_steps`` 0 turns it off.
    """

    def __init__(
        self,
        archive: str | Path,
        output: str | Path,
        every_n_steps: int,
        *,
        num_poses: int = 4,
        max_frames: int = 200,
        gif: bool = False,
        metric_poses: int | None = 256,
    ):
        self.archive = Path(archive)
        self.output = Path(output)
        self.every_n_steps = every_n_steps
        self.num_poses, self.max_frames, self.gif, self.metric_poses = num_poses, max_frames, gif, metric_poses
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        step = trainer.global_step
        if self.every_n_steps <= 0 or step == 0 or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        if not trainer.is_global_zero:
            return
        try:
            self.render_and_log(trainer, pl_module.model, step)
        except Exception as error:  # a failed render must never stop training
            log.warning("render at step %d failed: %s", step, error)

    def render_and_log(self, trainer: L.Trainer, model: PoseFSQAutoencoder, step: int) -> dict:
        """Render with ``model`` now and log the metrics (and videos to W&B); returns the report."""
        report = render(
            model, PoseZip(self.archive), self.output / f"step-{step:07d}",
            num_poses=self.num_poses, max_frames=self.max_frames, gif=self.gif, metric_poses=self.metric_poses,
        )
        scalars = {f"render/{k}": v for k, v in report["metrics"].items() if isinstance(v, float) and math.isfinite(v)}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
            if isinstance(logger, WandbLogger):
                import wandb

                folder = self.output / f"step-{step:07d}"
                videos = {
                    f"render/video/{Path(v['mp4']).stem}": wandb.Video(str(folder / v["mp4"]), format="mp4")
                    for v in report["videos"]
                }
                # the step as Lightning's WandbLogger logs it (W&B's own step counter is left alone)
                logger.experiment.log({**videos, "trainer/global_step": step})
        return report


def add_arguments(parser: argparse.ArgumentParser, _stage: str) -> None:
    parser.add_argument("--model", required=True, type=Path, help="model.ckpt, or a training output folder")
    parser.add_argument("--archive", required=True, type=Path, help="archive from `sign-vq archive`")
    parser.add_argument("--output", required=True, type=Path, help="folder for metrics.json, metrics.png, videos/")
    parser.add_argument("--num-poses", type=int, default=4, help="validation poses rendered as videos (default 4)")
    parser.add_argument("--max-frames", type=int, default=200, help="frames per video at most (default 200)")
    parser.add_argument("--no-gif", action="store_true", help="write mp4 videos only")
    parser.add_argument("--metric-poses", type=int, default=None, help="limit metrics to this many poses (default all)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def run(args: argparse.Namespace) -> int:
    if args.num_poses < 0 or args.max_frames < 1:
        raise UserError("--num-poses must be >= 0 and --max-frames >= 1")
    model = inference.load_on(args.model, args.device)
    render(
        model, PoseZip(args.archive), args.output,
        num_poses=args.num_poses, max_frames=args.max_frames, gif=not args.no_gif, metric_poses=args.metric_poses,
    )
    return 0


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("render")

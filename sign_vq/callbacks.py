"""Side work during training: :class:`RenderCallback` renders validation videos and metrics every N steps."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from sign_vq.model import PoseFSQAutoencoder
from sign_vq.posezip import PoseZip
from sign_vq.render import Report, render

log = logging.getLogger(__name__)


class RenderCallback(Callback):
    """Every ``every_n_steps`` training steps (rank zero only): render into ``output/step-<N>/`` and log it.

    Metrics go to every logger as ``render/<key>``; with a ``WandbLogger`` the mp4 videos are logged as
    ``wandb.Video(path, format="mp4")``. ``every_n_steps`` 0 turns it off. A failed render is logged, never
    stops training.
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
        self._last_step = step  # with gradient accumulation several batches end on one step: render once
        if not trainer.is_global_zero:
            return
        try:
            self.render_and_log(trainer, pl_module.model, step)
        except Exception as error:  # a failed render must never stop training
            log.warning("render at step %d failed: %s", step, error)

    def render_and_log(self, trainer: L.Trainer, model: PoseFSQAutoencoder, step: int) -> Report:
        """Render with ``model`` now and log the metrics (and videos to W&B); returns the report."""
        folder = self.output / f"step-{step:07d}"
        report = render(
            model, PoseZip(self.archive), folder,
            num_poses=self.num_poses, max_frames=self.max_frames, gif=self.gif, metric_poses=self.metric_poses,
        )
        scalars = {f"render/{k}": v for k, v in report.metrics.items() if isinstance(v, float) and math.isfinite(v)}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
            if isinstance(logger, WandbLogger):
                _log_videos(logger, folder, report, step)
        return report


def _log_videos(logger: WandbLogger, folder: Path, report: Report, step: int) -> None:
    """The report's mp4 videos as ``render/video/<name>`` at Lightning's ``trainer/global_step``."""
    import wandb

    videos = {
        f"render/video/{Path(v['mp4']).stem}": wandb.Video(str(folder / v["mp4"]), format="mp4")
        for v in report.videos
    }
    # the step as Lightning's WandbLogger logs it (W&B's own step counter is left alone)
    logger.experiment.log({**videos, "trainer/global_step": step})

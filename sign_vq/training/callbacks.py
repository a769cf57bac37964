"""Callbacks that keep a training run safe on a cluster: stop on non-finite weights, checkpoint (periodically and on
Slurm's stop signals), and plain progress lines for batch logs.

Order matters: :class:`NonFiniteGuard` runs before :class:`Checkpoints` in ``on_train_batch_end`` so a checkpoint
with non-finite weights is never written.
"""

from __future__ import annotations

import logging
import math
import multiprocessing.util
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from sign_vq.config import RenderConfig
from sign_vq.errors import UserError
from sign_vq.evaluation.render import Report, render
from sign_vq.fileio import atomic_path
from sign_vq.formats.posezip import PoseZip
from sign_vq.model.network import PoseFSQAutoencoder
from sign_vq.training.runs import RUN_KEY

log = logging.getLogger(__name__)


class NonFiniteGuard(Callback):
    """Stops with a clear error at the first step whose weights are no longer finite (a NaN/inf loss or gradient).

    Under DDP the weights are identical on every rank after each step, so every rank stops at the same step.
    """

    def __init__(self, causes: str):
        self.causes = causes

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, *args) -> None:
        finite = torch.stack([p.detach().isfinite().all() for p in pl_module.parameters()]).all()
        if not bool(finite):
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            raise UserError(
                f"training diverged at step {trainer.global_step}: the loss ({float(loss):.4g}) or its gradients "
                f"are not finite and no checkpoint was written; check {self.causes}"
            )


class Checkpoints(Callback):
    """One rolling ``last`` checkpoint every ``every`` steps (and a kept ``step-N.ckpt`` every ``keep_every`` steps if
    > 0), stamped with the digest ``run`` of the run's identity; on SIGTERM/SIGUSR1 (Slurm's time limit or its early
    warning, sent to every process of the job) or SIGINT (Ctrl-C) it saves ``last`` at the end of the current step
    and stops the run.

    Lightning installs its own SIGTERM handler when fitting starts (it stops at the next loop boundary, even
    mid-validation, without a checkpoint), so this callback takes SIGTERM back once training starts. Every rank
    stops at the same step when any rank was signalled. Call :meth:`restore` after fitting, whatever its outcome.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self, last: Path, every: int, keep_every: int, run: str):
        self.last, self.every, self.keep_every, self.run = last, every, keep_every, run
        self.received: int | None = None
        self._previous: dict = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, _frame) -> None:
        self.received = signum

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[RUN_KEY] = self.run  # which run wrote it (sign_vq.training.runs.resume_point checks it)

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        step = trainer.global_step
        stop = trainer.strategy.reduce_boolean_decision(self.received is not None, all=False)
        keep = self.keep_every > 0 and step % self.keep_every == 0
        if stop or keep or step % self.every == 0 or step >= trainer.max_steps:
            trainer.save_checkpoint(self.last, weights_only=False)
        if keep and trainer.is_global_zero:
            with atomic_path(self.last.with_name(f"step-{step}.ckpt")) as copy:
                shutil.copyfile(self.last, copy)
        if stop and not trainer.should_stop:
            if trainer.is_global_zero:
                log.warning("stop signal received: saved %s at step %d, stopping", self.last, step)
            trainer.should_stop = True

    def restore(self) -> None:
        """Put back the handlers that were there before training."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class ProgressLines(Callback):
    """A plain log line every ``every`` steps (rank zero): step, loss, steps/s and the time left. For batch logs,
    where a progress bar would write every redraw into the file."""

    def __init__(self, every: int):
        self.every = every
        self._start: tuple[float, int] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = (time.monotonic(), trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, *args) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or self._start is None or (step % self.every and step < trainer.max_steps):
            return
        elapsed = time.monotonic() - self._start[0]
        rate = (step - self._start[1]) / max(elapsed, 1e-9)
        left = (trainer.max_steps - step) / rate if rate > 0 else float("inf")
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        log.info("step %d/%d loss %.4g %.2f steps/s ETA %s", step, trainer.max_steps, float(loss), rate, _clock(left))


def _clock(seconds: float) -> str:
    """``H:MM:SS`` (hours unbounded), ``?`` when unknown."""
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class StopAtStep(Callback):
    """Fault injection for tests (``SIGN_VQ_STOP_AT_STEP=STEP:HOW``): at the end of step STEP, after its checkpoint,
    ``kill`` SIGKILLs every rank; ``term``/``usr1``/``int`` send SIGTERM/SIGUSR1/SIGINT to rank zero's process group
    (as Slurm does at a time limit, or Ctrl-C in a terminal); ``scancel-term``/``scancel-usr1`` ask Slurm to signal
    every step of this job; ``fork-term``/``fork-int`` make every DataLoader worker started afterwards (from the
    start of training for STEP 0) send the signal to the process group as soon as it is forked."""

    ENV = "SIGN_VQ_STOP_AT_STEP"
    HOWS = ("kill", "term", "usr1", "int", "scancel-term", "scancel-usr1", "fork-term", "fork-int")

    def __init__(self, spec: str):
        step, _, how = spec.partition(":")
        if not step.isdigit() or how not in self.HOWS:
            raise UserError(f"{self.ENV}={spec!r}: expected STEP:HOW with HOW one of {', '.join(self.HOWS)}")
        self.step, self.how = int(step), how
        self.signal = getattr(signal, f"SIG{how.rsplit('-', 1)[-1].upper()}", signal.SIGKILL)

    @classmethod
    def from_environment(cls) -> list[Callback]:
        spec = os.environ.get(cls.ENV)
        return [cls(spec)] if spec else []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.step == 0 and self.how.startswith("fork"):
            multiprocessing.util.register_after_fork(self, StopAtStep._signal_group)

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step != self.step:
            return
        if self.how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if not trainer.is_global_zero:
            return
        if self.how.startswith("scancel"):
            subprocess.run(["scancel", f"--signal={self.signal.name[3:]}", os.environ["SLURM_JOB_ID"]], check=True)
        elif self.how.startswith("fork"):
            multiprocessing.util.register_after_fork(self, StopAtStep._signal_group)
        else:
            self._signal_group()

    def _signal_group(self) -> None:
        os.killpg(os.getpgid(0), self.signal)


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
        settings: RenderConfig,
    ):
        self.archive = Path(archive)
        self.output = Path(output)
        self.every_n_steps = every_n_steps
        self.settings = settings
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
        report = render(model, PoseZip(self.archive), folder, self.settings)
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

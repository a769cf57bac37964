"""Training: `sign-vq train --config CONFIG --archive ARCHIVE --stats STATS --output DIR`.

Checkpoints go to ``DIR/checkpoints/`` every ``checkpoint_every`` steps (a real ``last.ckpt``, not a link); when it
exists, training resumes from it (unless the train config changed: then the old checkpoints are moved aside). A run
that stops before ``max_steps`` (killed, SIGTERM/SIGUSR1 from Slurm) exits 3 so a workflow retry resumes it. The
final model is ``DIR/model.ckpt``; metrics are in ``DIR/metrics.csv`` and ``DIR/curves.png``, and in W&B (offline by
default, one run id kept in ``DIR/wandb_run_id`` so a resumed job continues the same run).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import signal
import time
import uuid
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from sign_vq.config import load_config
from sign_vq.data import PoseDataModule
from sign_vq.errors import UserError
from sign_vq.fileio import atomic_open, atomic_path
from sign_vq.module import PoseVQModule
from sign_vq.stats import load_stats

log = logging.getLogger(__name__)
INTERRUPTED = 3
PRECISION = {"32": "32-true"}


class StopOnSignal(Callback):
    """On SIGTERM/SIGUSR1 (Slurm's warning before a time limit or preemption): save last.ckpt and stop.

    Lightning installs its own SIGTERM handler when fitting starts; it stops at the next loop boundary (even
    mid-validation) without a checkpoint, so this callback takes SIGTERM back once training starts. Every rank
    stops at the same step when any rank was signalled. Lightning's teardown reinstalls this callback's handlers
    on every outcome, so the caller restores the previous ones with :meth:`restore`.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, last: Path):
        self.last = last
        self.received: int | None = None
        self._previous: dict = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, _frame) -> None:
        self.received = signum

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.strategy.reduce_boolean_decision(self.received is not None, all=False) and not trainer.should_stop:
            log.warning("stop signal received: saving %s at step %d and stopping", self.last, trainer.global_step)
            trainer.save_checkpoint(self.last)
            trainer.should_stop = True

    def restore(self) -> None:
        """Put back the handlers that were there before training (call after fitting, whatever its outcome)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed: a kill mid-save never leaves a truncated last.ckpt."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def _wandb_logger(config: dict, output: Path) -> Logger | None:
    """A W&B logger that continues the run whose id is kept in ``output``; None when disabled or unavailable."""
    settings = config["wandb"]
    mode = os.environ.get("WANDB_MODE", settings["mode"])
    if mode == "disabled":
        return None
    id_file = output / "wandb_run_id"
    if not id_file.exists():
        with atomic_open(id_file) as handle:
            handle.write(uuid.uuid4().hex[:12])
    try:
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(
            project=settings["project"],
            entity=settings["entity"] or None,
            id=id_file.read_text().strip(),
            resume="allow",
            save_dir=str(output),
            offline=mode == "offline",
        )
    except Exception as error:  # W&B must never stop training
        log.warning("W&B logging disabled: %s", error)
        return None


def _render_callback(config: dict, archive: Path, output: Path) -> Callback:
    """Validation videos and metrics every ``train.render_every`` steps (rank zero; a no-op when 0)."""
    from sign_vq.callbacks import RenderCallback

    render = config["render"]
    return RenderCallback(
        archive, output / "renders", config["train"]["render_every"],
        num_poses=render["num_poses"], max_frames=render["max_frames"], gif=False,
    )


def _resume_checkpoint(last: Path, config: dict) -> Path | None:
    """``last`` if it was written with the same train config; otherwise move stale checkpoints aside."""
    if not last.exists():
        return None
    try:
        saved = torch.load(last, map_location="cpu", weights_only=False)["hyper_parameters"]["config"]
    except Exception as error:
        raise UserError(
            f"{last}: unreadable checkpoint ({type(error).__name__}: {error}); delete it to start over"
        ) from None
    if saved == config:
        return last
    stale = last.parent.with_name(f"checkpoints.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    log.warning("train config changed since %s was saved: moving it to %s and starting over", last, stale)
    last.parent.rename(stale)
    return None


def _merge_csv_logs(output: Path) -> Path:
    """One ``metrics.csv`` from the CSV logs of every (resumed) run, the later run winning on repeated steps."""
    rows: dict[tuple, dict] = {}
    fields: list[str] = []
    for version in sorted((output / "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1])):
        path = version / "metrics.csv"
        if not path.exists():
            continue
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                fields.extend(k for k in row if k not in fields)
                key = (int(row.get("step") or 0), tuple(sorted(k for k, v in row.items() if v not in ("", None))))
                rows[key] = row
    target = output / "metrics.csv"
    with atomic_open(target, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for key in sorted(rows, key=lambda k: k[0]):
            writer.writerow(rows[key])
    return target


def plot_curves(metrics_csv: Path, output: Path) -> None:
    """Training/validation loss and codebook utilization over steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    with open(metrics_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            for key in ("train/loss", "val/loss", "val/codebook_utilization"):
                if row.get(key):
                    series.setdefault(key, []).append((int(row["step"]), float(row[key])))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in ("train/loss", "val/loss"):
        if key in series:
            left.plot(*zip(*series[key]), label=key)
    left.set(xlabel="step", ylabel="loss (shoulder widths²)", yscale="log", title="reconstruction loss")
    left.legend()
    if "val/codebook_utilization" in series:
        right.plot(*zip(*series["val/codebook_utilization"]), marker="o")
    right.set(xlabel="step", ylabel="fraction of codes used", ylim=(0, 1.05), title="codebook utilization")
    figure.tight_layout()
    with atomic_path(output) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def train(config: dict, archive: Path, stats_path: Path, output: Path) -> int:
    """Train (or resume) into ``output``; returns 0 when ``max_steps`` was reached, else 3."""
    train_config = config["train"]
    stats = load_stats(stats_path)
    data = PoseDataModule(archive, train_config)
    output.mkdir(parents=True, exist_ok=True)
    last = output / "checkpoints" / "last.ckpt"
    resume = _resume_checkpoint(last, train_config)
    L.seed_everything(train_config["seed"], workers=True, verbose=False)
    module = PoseVQModule(train_config, stats.mean, stats.std)
    loggers: list[Logger] = [CSVLogger(str(output), name="logs")]
    wandb_logger = _wandb_logger(train_config, output)
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    checkpoint = ModelCheckpoint(
        dirpath=last.parent,
        filename="step-{step}",
        every_n_train_steps=train_config["checkpoint_every"],
        save_last=True,
        save_top_k=1,
        monitor="step",
        auto_insert_metric_name=False,
        mode="max",
    )
    plugins: list = [AtomicCheckpointIO()]
    if "SLURM_JOB_ID" in os.environ:
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=False))  # Snakemake's retries resubmit, not Lightning
    stop_on_signal = StopOnSignal(last)
    trainer = L.Trainer(
        max_steps=train_config["max_steps"],
        accelerator=train_config["accelerator"],
        devices=train_config["devices"],
        num_nodes=train_config["num_nodes"],
        precision=PRECISION.get(train_config["precision"], train_config["precision"]),
        callbacks=[checkpoint, stop_on_signal, _render_callback(config, archive, output)],
        logger=loggers,
        plugins=plugins,
        val_check_interval=train_config["val_every"],
        check_val_every_n_epoch=None,
        log_every_n_steps=min(10, train_config["val_every"]),
        num_sanity_val_steps=0,
        deterministic="warn",
        default_root_dir=str(output),
        enable_model_summary=False,
    )
    if resume is not None:
        log.info("resuming from %s", resume)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=resume)
    except SIGTERMException:  # Lightning's own SIGTERM exit, for a signal before training started
        log.warning("stopped by SIGTERM")
    finally:
        stop_on_signal.restore()
    if wandb_logger is not None and trainer.global_rank == 0:
        wandb_logger.experiment.finish()  # flush and close the run; a resumed job reopens it by its id
    if trainer.global_rank != 0:
        return 0 if trainer.global_step >= train_config["max_steps"] else INTERRUPTED
    plot_curves(_merge_csv_logs(output), output / "curves.png")
    if trainer.global_step < train_config["max_steps"]:
        log.error(
            "stopped at step %d of %d; rerun the same command to resume from %s",
            trainer.global_step, train_config["max_steps"], last,
        )
        return INTERRUPTED
    trainer.save_checkpoint(output / "model.ckpt", weights_only=True)  # atomic through AtomicCheckpointIO
    log.info("model written to %s", output / "model.ckpt")
    return 0


def add_arguments(parser: argparse.ArgumentParser, _stage: str) -> None:
    parser.add_argument("--config", type=Path, help="YAML config (its `train` section is used; defaults if omitted)")
    parser.add_argument("--archive", required=True, type=Path, help="training archive from `sign-vq archive`")
    parser.add_argument("--stats", required=True, type=Path, help="statistics from `sign-vq stats`")
    parser.add_argument("--output", required=True, type=Path, help="training folder (checkpoints, logs, model.ckpt)")


def run(args: argparse.Namespace) -> int:
    return train(load_config(args.config), args.archive, args.stats, args.output)


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("train")

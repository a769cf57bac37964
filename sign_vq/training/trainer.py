"""One training run: the Lightning trainer, its callbacks and loggers (W&B offline by default, its id kept in
``DIR/wandb_run_id``), resume from ``DIR/checkpoints/last.ckpt``, and what rank zero publishes (``DIR/model.ckpt``,
``DIR/metrics.csv``, ``DIR/curves.png``)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import logging
import os
import sys
import uuid
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from sign_vq.config import Config, TrainConfig, WandbConfig
from sign_vq.errors import UserError
from sign_vq.evaluation.charts import plot_curves
from sign_vq.fileio import atomic_open
from sign_vq.formats.statistics import load_stats
from sign_vq.model.checkpoint import read_checkpoint
from sign_vq.training.callbacks import Checkpoints, NonFiniteGuard, ProgressLines, StopAtStep
from sign_vq.training.data import PoseDataModule
from sign_vq.training.module import PoseVQModule
from sign_vq.training.runs import exclusive, identity_digest, resume_point, run_identity, start_run

log = logging.getLogger(__name__)
INTERRUPTED = 3
TRAINING_METRIC_POSES = 256  # validation poses a render during training measures at most


class SafeCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed (a kill mid-save never leaves a truncated last.ckpt), and
    read without unpickling arbitrary objects."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        buffer = io.BytesIO()  # torch's own file writer turns a full disk into a RuntimeError without its cause
        torch.save(checkpoint, buffer)
        try:
            with atomic_open(path, "wb") as handle:  # beside the target: never through the system temporary folder
                handle.write(buffer.getbuffer())
        except OSError as error:
            raise UserError(
                f"{path}: cannot write the checkpoint ({error.strerror or error}); free space on its file system and "
                "rerun the same command to resume from the last one written"
            ) from None

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict:
        return read_checkpoint(path, map_location or "cpu")


def _wandb_logger(settings: WandbConfig, output: Path) -> Logger | None:
    """A W&B logger that continues the run whose id is kept in ``output``; None when disabled or unavailable."""
    mode = os.environ.get("WANDB_MODE", settings.mode)
    if mode == "disabled":
        return None
    id_file = output / "wandb_run_id"
    if not id_file.exists():
        with atomic_open(id_file) as handle:
            handle.write(uuid.uuid4().hex[:12])
    try:
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(
            project=settings.project,
            entity=settings.entity or None,
            id=id_file.read_text().strip(),
            resume="allow",
            save_dir=str(output),
            offline=mode == "offline",
        )
    except Exception as error:  # W&B must never stop training
        log.warning("W&B logging disabled: %s", error)
        return None


def _render_callback(config: Config, archive: Path, output: Path) -> Callback:
    """Validation videos (mp4, no GIF) and metrics every ``train.render_every`` steps (rank zero; a no-op when 0);
    the metrics cover ``render.metric_poses`` poses, at most :data:`TRAINING_METRIC_POSES` (a render stalls training)."""
    from sign_vq.training.callbacks import RenderCallback

    measured = min(config.render.metric_poses or TRAINING_METRIC_POSES, TRAINING_METRIC_POSES)
    settings = dataclasses.replace(config.render, gif=False, metric_poses=measured)
    return RenderCallback(archive, output / "renders", config.train.render_every, settings)


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


def _callbacks(config: Config, archive: Path, stats: Path, output: Path, last: Path, run: str) -> list[Callback]:
    train_config = config.train
    callbacks: list[Callback] = [
        NonFiniteGuard(f"the statistics file {stats} and the learning rate (train.lr = {train_config.lr})"),
        Checkpoints(last, train_config.checkpoint_every, train_config.keep_every, run),
        *StopAtStep.from_environment(),
        _render_callback(config, archive, output),
    ]
    if not _on_terminal():
        callbacks.append(ProgressLines(train_config.log_every))
    return callbacks


def _on_terminal() -> bool:
    return sys.stderr.isatty()


def _quiet_third_parties() -> None:
    """Batch logs keep only what matters: no Lightning tips, hardware banners or hints about worker counts."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # torch vs Lightning 2.6
    warnings.filterwarnings("ignore", message="The `srun` command is available")  # srun is used where it matters


def _trainer(train_config: TrainConfig, callbacks: list[Callback], loggers: list[Logger], output: Path) -> L.Trainer:
    plugins: list = [SafeCheckpointIO()]
    if "SLURM_JOB_ID" in os.environ:
        plugins.append(SLURMEnvironment(auto_requeue=False))  # Snakemake's retries resubmit, not Lightning
    return L.Trainer(
        max_steps=train_config.max_steps,
        accelerator=train_config.accelerator,
        devices=train_config.devices,
        num_nodes=train_config.num_nodes,
        # torchrun asked for a process group: DDP even for one process (Lightning would pick a single device)
        strategy="ddp" if TorchElasticEnvironment.detect() else "auto",
        precision=train_config.precision,
        callbacks=callbacks,
        logger=loggers,
        plugins=plugins,
        use_distributed_sampler=False,  # the step sampler shards by rank itself (data.StepSampler)
        val_check_interval=train_config.val_every,
        check_val_every_n_epoch=None,
        log_every_n_steps=min(10, train_config.val_every),
        num_sanity_val_steps=0,
        deterministic="warn",
        default_root_dir=str(output),
        enable_checkpointing=False,  # run_control.Checkpoints: one rolling last.ckpt
        enable_model_summary=False,
        enable_progress_bar=_on_terminal(),
    )


def _weights_fingerprint(module: L.LightningModule) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def global_rank(devices: int) -> int:
    """This process's rank among all training processes, before Lightning sets up: from torchrun (``RANK``),
    Lightning's own launch or a manual multi-node start (``NODE_RANK`` × devices + ``LOCAL_RANK``), or srun
    (``SLURM_PROCID``)."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if "LOCAL_RANK" in env or "NODE_RANK" in env:
        return int(env.get("NODE_RANK", 0)) * devices + int(env.get("LOCAL_RANK", 0))
    return int(env.get("SLURM_PROCID", 0))


def train(config: Config, archive: Path, stats_path: Path, output: Path) -> int:
    """Train (or resume) into ``output``, held by this run alone (global rank zero locks it); returns 0 when
    ``max_steps`` was reached, else 3."""
    rank_zero = global_rank(config.train.devices) == 0
    with exclusive(output) if rank_zero else contextlib.nullcontext():
        return _train(config, archive, stats_path, output, rank_zero)


def _train(config: Config, archive: Path, stats_path: Path, output: Path, rank_zero: bool) -> int:
    train_config = config.train
    _quiet_third_parties()
    stats = load_stats(stats_path)
    data = PoseDataModule(archive, train_config)
    last = output / "checkpoints" / "last.ckpt"
    identity = run_identity(train_config, archive, stats_path)
    resume = resume_point(output, identity, last)
    if resume is None and rank_zero:
        start_run(output, identity)
    L.seed_everything(train_config.seed, workers=True, verbose=False)
    module = PoseVQModule(train_config, stats.mean, stats.std)
    loggers: list[Logger] = [CSVLogger(str(output), name="logs")]
    wandb_logger = _wandb_logger(train_config.wandb, output) if rank_zero else None
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    callbacks = _callbacks(config, archive, stats_path, output, last, identity_digest(identity))
    trainer = _trainer(train_config, callbacks, loggers, output)
    if resume is not None:
        log.info("resuming from %s", resume)
    checkpoints = next(c for c in callbacks if isinstance(c, Checkpoints))
    try:
        trainer.fit(module, datamodule=data, ckpt_path=resume)
    except SIGTERMException:  # Lightning's own SIGTERM exit, for a signal before training started
        log.warning("stopped by SIGTERM")
    finally:
        checkpoints.restore()
        if wandb_logger is not None:
            wandb_logger.experiment.finish()  # flush and close the run; a resumed job reopens it by its id
    return _finish(trainer, module, train_config, output, last)


def _finish(trainer: L.Trainer, module: L.LightningModule, train_config: TrainConfig, output: Path, last: Path) -> int:
    """Rank zero's curves and CSV; the final model once ``max_steps`` is reached (every rank takes part)."""
    done = trainer.global_step >= train_config.max_steps
    log.info(
        "rank %d stopped at step %d, weights %s", trainer.global_rank, trainer.global_step, _weights_fingerprint(module)
    )
    if done:
        trainer.save_checkpoint(output / "model.ckpt", weights_only=True)  # written by rank zero, atomically
    if not trainer.is_global_zero:
        return 0 if done else INTERRUPTED
    plot_curves(_merge_csv_logs(output), output / "curves.png")
    if not done:
        log.error(
            "stopped at step %d of %d; rerun the same command to resume from %s",
            trainer.global_step, train_config.max_steps, last,
        )
        return INTERRUPTED
    log.info("model written to %s", output / "model.ckpt")
    return 0

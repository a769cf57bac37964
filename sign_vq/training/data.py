"""Batches from the training archive: random crops for training, fixed windows for validation.

Poses are read one archive member at a time (never the whole archive), so memory stays flat and DataLoader workers
work. Training samples are a pure function of (seed, sample number): a run resumed at step N draws exactly the
batches an uninterrupted run draws from step N on (:class:`StepSampler`).
"""

from __future__ import annotations

import logging
import multiprocessing.context
import signal
from dataclasses import astuple
from multiprocessing import popen_fork
from pathlib import Path
from typing import Callable, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sign_vq.config import AugmentConfig, TrainConfig
from sign_vq.formats.posezip import Entries, PoseZip
from sign_vq.model import windows
from sign_vq.poses.skeleton import values_and_mask

log = logging.getLogger(__name__)


def pose_tensors(pose: np.ma.MaskedArray) -> dict[str, torch.Tensor]:
    """A masked pose (T x 178 x 3) as float32 values (0 where missing) and the observed flags (T x 178)."""
    values, missing = values_and_mask(pose)
    return {"poses": torch.from_numpy(values), "observed": torch.from_numpy(~missing)}


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad a list of poses to the longest, the way inference pads its windows; ``padding`` is True on padded frames."""
    length = max(item["poses"].shape[0] for item in items)
    arrays = [(item["poses"].numpy(), item["observed"].numpy()) for item in items]
    (poses, observed), padding = windows.collate(arrays, torch.device("cpu"), length)
    return {"poses": poses, "observed": observed, "padding": padding}


def shape_directions(archive: PoseZip, entries: Entries, seed: int, limit: int = 1000) -> np.ndarray:
    """How one signer's mean pose (build, rest position) differs from another's: the principal directions of the mean
    poses of at most ``limit`` training poses (drawn with ``seed``), each scaled by its spread (K x 178 x 3)."""
    chosen = np.random.default_rng(seed).choice(len(entries), size=min(limit, len(entries)), replace=False)
    means = np.stack([np.ma.filled(archive.read(entries[i]).astype(np.float32).mean(0), np.nan) for i in sorted(chosen)])
    seen = ~np.isnan(means).all(0)
    means = np.where(np.isnan(means), np.where(seen, np.nanmean(np.where(seen, means, 0.0), 0), 0.0), means)
    _, spread, axes = np.linalg.svd((means - means.mean(0)).reshape(len(means), -1), full_matrices=False)
    return ((spread / np.sqrt(len(means)))[:, None] * axes).reshape(-1, *means.shape[1:]).astype(np.float32)


def augment(
    item: dict[str, torch.Tensor], rng: np.random.Generator, settings: AugmentConfig, shapes: np.ndarray | None = None
) -> dict[str, torch.Tensor]:
    """As if another signer of another build stood a little elsewhere: for half the crops, a random mean-pose
    offset along ``shapes`` (:func:`shape_directions`, coefficients ~ N(0, ``shape``²)); then a random similarity
    transform of the whole pose (scale, rotation in the image plane, shift; z scaled with x and y). Missing points
    stay 0."""
    poses = item["poses"].clone()
    if settings.shape and shapes is not None and rng.random() < 0.5:
        coefficients = rng.normal(0.0, settings.shape, len(shapes)).astype(np.float32)
        poses += torch.from_numpy(np.tensordot(coefficients, shapes, 1))
    if settings.scale or settings.rotate or settings.shift:
        scale = float(np.exp(rng.uniform(-settings.scale, settings.scale)))
        angle = np.deg2rad(rng.uniform(-settings.rotate, settings.rotate))
        shift = rng.uniform(-settings.shift, settings.shift, size=2)
        matrix = torch.tensor([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype=torch.float32)
        poses[..., :2] = poses[..., :2] @ matrix.T * scale + torch.tensor(shift, dtype=torch.float32)
        poses[..., 2] *= scale
    poses[~item["observed"]] = 0
    return {**item, "poses": poses}


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader workers never take SIGTERM/SIGINT/SIGUSR1 (sent by Slurm or Ctrl-C to every process of the job):
    the main process saves a checkpoint and stops the workers itself; a worker killed first would make it fail
    without one. The signals stay blocked from the fork (:class:`WorkerContext`) until here, after torch's own worker
    SIGTERM handler (which dies of a SIGTERM from anyone but the parent) is installed; one that arrived meanwhile is
    dropped."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class _WorkerPopen(popen_fork.Popen):
    """Forks with :data:`STOP_SIGNALS` blocked; stops a worker with SIGKILL, as a worker ignores SIGTERM."""

    def __init__(self, process_obj: multiprocessing.process.BaseProcess):
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            super().__init__(process_obj)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def terminate(self) -> None:
        self.kill()


class _WorkerProcess(multiprocessing.context.ForkProcess):
    @staticmethod
    def _Popen(process_obj: multiprocessing.process.BaseProcess) -> _WorkerPopen:
        return _WorkerPopen(process_obj)


class WorkerContext(multiprocessing.context.ForkContext):
    """The multiprocessing context of every DataLoader here: workers start with the stop signals blocked, at their
    first start and at every restart, until :func:`ignore_stop_signals` ignores them."""

    Process = _WorkerProcess


class RandomCrops(Dataset):
    """Sample ``i``: a pose drawn at random, cropped to at most ``max_frames`` frames and augmented
    (a pure function of seed and i)."""

    def __init__(
        self,
        archive: PoseZip,
        entries: Entries,
        max_frames: int,
        seed: int,
        length: int,
        augmentation: AugmentConfig,
        shapes: np.ndarray | None = None,
    ):
        self.archive, self.entries = archive, entries
        self.max_frames, self.seed, self.length, self.augmentation = max_frames, seed, length, augmentation
        self.shapes = shapes

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, index))
        entry = self.entries[rng.integers(len(self.entries))]
        pose = self.archive.read(entry)
        offset = rng.integers(max(len(pose) - self.max_frames, 0) + 1)
        item = pose_tensors(pose[offset : offset + self.max_frames])
        return augment(item, rng, self.augmentation, self.shapes) if any(astuple(self.augmentation)) else item


class StepSampler(Sampler[int]):
    """This rank's samples of steps ``current_step() .. max_steps-1`` each time it is iterated.

    Sample numbers are global: step ``s`` of a run with ``world_size`` ranks draws samples
    ``s * world_size * batch_size ..`` and rank ``r`` takes the ``r``-th block of ``batch_size`` of them, so every rank
    sees other samples and each batch is a pure function of (seed, step, rank). Reading the step when iteration starts
    (not when the loader is built) keeps a resumed run on the exact samples of an uninterrupted one. Under DDP the
    trainer must not wrap it (``use_distributed_sampler=False``): it already is this rank's share.
    """

    def __init__(
        self, current_step: Callable[[], int], max_steps: int, batch_size: int, rank: int = 0, world_size: int = 1
    ):
        self.current_step, self.max_steps, self.batch_size = current_step, max_steps, batch_size
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(self.max_steps - self.current_step(), 0) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        size = self.batch_size
        for step in range(self.current_step(), self.max_steps):
            first = (step * self.world_size + self.rank) * size
            yield from range(first, first + size)


class RankShare(Sampler[int]):
    """Rank ``rank``'s share of ``length`` items for evaluation: items ``rank, rank + world_size, ...``, padded to the
    same count on every rank with ``-1`` (an item that counts nothing, see :class:`Windows`), so all ranks run the
    same number of batches and their metric sums add up to exactly the whole split's."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.length, self.rank, self.world_size = length, rank, world_size

    def __len__(self) -> int:
        return -(-self.length // self.world_size)

    def __iter__(self) -> Iterator[int]:
        for i in range(len(self)):
            index = self.rank + i * self.world_size
            yield index if index < self.length else -1


class Windows(Dataset):
    """Every pose of ``entries`` cut into consecutive windows of at most ``max_frames`` frames (deterministic; two
    arrays, not an object per window)."""

    def __init__(self, archive: PoseZip, entries: Entries, max_frames: int):
        self.archive = archive
        positions = np.asarray(entries.positions, np.int64)
        windows = -(-np.asarray(archive.frames[positions], np.int64) // max_frames)
        self.poses = np.repeat(positions, windows)
        self.starts = (np.arange(len(self.poses)) - np.repeat(np.cumsum(windows) - windows, windows)) * max_frames
        self.max_frames = max_frames

    def __len__(self) -> int:
        return len(self.poses)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Window ``index``; ``-1`` (padding of :class:`RankShare`) is the first window with nothing observed."""
        pose, start = self.poses[max(index, 0)], self.starts[max(index, 0)]
        item = pose_tensors(self.archive.read(pose)[start : start + self.max_frames])
        if index < 0:
            item["observed"] = torch.zeros_like(item["observed"])
        return item


class PoseDataModule(L.LightningDataModule):
    """Train batches are step-indexed random crops; validation covers the whole `val` split."""

    def __init__(self, archive: str | Path, config: TrainConfig):
        super().__init__()
        self.archive = PoseZip(archive)
        self.config = config
        self.train_entries = self.archive.split("train")
        self.val_entries = self.archive.split("val")
        if not self.train_entries:
            raise ValueError(f"{archive}: no training poses (is val_fraction 1?)")
        if not self.val_entries:
            log.warning("%s: no validation poses; validating on the first training poses", archive)
            self.val_entries = self.train_entries[:4]

    def _loader(self, dataset: Dataset, sampler: Sampler) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            persistent_workers=workers > 0,
            multiprocessing_context=WorkerContext() if workers > 0 else None,
            worker_init_fn=ignore_stop_signals,
        )

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer else (0, 1)

    def train_dataloader(self) -> DataLoader:
        config = self.config
        trainer = self.trainer
        sampler = StepSampler(
            lambda: trainer.global_step if trainer else 0, config.max_steps, config.batch_size, *self._rank()
        )
        length = config.max_steps * config.batch_size * sampler.world_size
        augmentation = config.augment
        shapes = shape_directions(self.archive, self.train_entries, config.seed) if augmentation.shape else None
        dataset = RandomCrops(
            self.archive, self.train_entries, config.max_frames, config.seed, length, augmentation, shapes
        )
        return self._loader(dataset, sampler)

    def val_dataloader(self) -> DataLoader:
        windows = Windows(self.archive, self.val_entries, self.config.max_frames)
        return self._loader(windows, RankShare(len(windows), *self._rank()))

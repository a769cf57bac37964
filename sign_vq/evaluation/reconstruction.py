"""Scoring a model on whole poses of an archive: what `sign-vq render` reports and `benchmarks/quality.py` measures.

Each pose is reconstructed whole (in windows of the model's ``max_frames``), so the trivial reference of
:class:`sign_vq.evaluation.metrics.ReconstructionMetrics` is the pose's own mean.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from sign_vq.evaluation.metrics import ReconstructionMetrics
from sign_vq.formats.posezip import PoseZip
from sign_vq.model.codes import reconstruct_array
from sign_vq.model.network import PoseFSQAutoencoder
from sign_vq.poses import skeleton


@dataclass(frozen=True)
class Reconstruction:
    """One whole pose of an archive and the model's reconstruction of it (normalized coordinates)."""

    entry: dict  # the archive's index entry (id, fps, center, scale, ...)
    data: np.ndarray  # frames x 178 x 3 float32, 0 where missing
    mask: np.ndarray  # frames x 178, True where missing
    recon: np.ndarray  # frames x 178 x 3 float32
    codes: np.ndarray  # frames x num_codebooks int64


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode and without gradients; restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def reconstructions(
    model: PoseFSQAutoencoder, archive: PoseZip, entries: Iterable[dict], quantizers: int | None = None
) -> Iterator[Reconstruction]:
    """The reconstruction of each pose of ``entries`` (read from ``archive``), in order, from all codes of a frame or
    a residual model's first ``quantizers``."""
    for entry in entries:
        data, mask = skeleton.values_and_mask(archive.read(entry))
        recon, codes = reconstruct_array(model, data, mask, quantizers)
        yield Reconstruction(entry, data, mask, recon, codes)


def new_metrics(model: PoseFSQAutoencoder) -> ReconstructionMetrics:
    """Empty metrics for ``model``'s codebook."""
    return ReconstructionMetrics(model.codebook_size, model.bits_per_frame)


def add_pose(metrics: ReconstructionMetrics, pose: Reconstruction) -> None:
    """Add one whole pose to ``metrics`` (its reference is the pose's own mean; pixels via its shoulder width and
    centre)."""
    metrics.update(
        torch.from_numpy(pose.recon)[None],
        torch.from_numpy(pose.data)[None],
        torch.from_numpy(~pose.mask)[None],
        torch.from_numpy(pose.codes)[None],
        scale=torch.tensor([float(pose.entry["scale"])]),
        center=torch.tensor([pose.entry["center"]], dtype=torch.float64),
    )


def measure(model: PoseFSQAutoencoder, archive: PoseZip, entries: Iterable[dict]) -> dict[str, float]:
    """The metrics of ``model`` over whole poses of ``archive`` (what `render` reports, without videos)."""
    metrics = new_metrics(model)
    with evaluating(model):
        poses = reconstructions(model, archive, entries)
        for pose in tqdm(poses, desc="measure", unit="pose", leave=False, disable=None):
            add_pose(metrics, pose)
    return metrics.compute()

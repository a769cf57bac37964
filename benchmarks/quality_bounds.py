"""What simple codecs reach on the quality benchmark's split (`make bench-quality-bounds`, about a minute).

The same data as `benchmarks.quality` (train on 12 fingerspelling languages, score every whole pose of 3 unseen
ones), the same metric (:class:`sign_vq.evaluation.metrics.ReconstructionMetrics`: mean L2 error per part in shoulder widths,
as a ratio to the trivial reference "every frame = the pose's own mean"). Each row is a codec
that is given something for free, so it bounds what a learned model at <= 10 bits per frame can hope for:

- ``per-frame VQ``: the nearest of 2**bits prototypes (k-means++ of the training frames), no temporal context.
- ``static k``: perfect motion, the pose mean replaced by its projection on the first k principal components of
  the training poses' means (the signer's shape and rest position as far as 12 signers span them).
- ``static, N bits a pose``: the same with every coefficient quantized, N bits in all spread over the
  coefficients by their spread (reverse water-filling); bits per frame = N over the mean pose length, before any
  motion is coded.
- ``motion k``: the pose mean for free, each frame's deviation from it projected on k principal components per
  part (fitted on the training deviations), unquantized.

    python -m benchmarks.quality_bounds [--data DIR] [--held-out gss,psr,tsm] [--workdir D]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks import DATA_HELP, corpus
from benchmarks.quality import HELD_OUT, prepare
from sign_vq.evaluation.metrics import ReconstructionMetrics
from sign_vq.evaluation.names import metric_name
from sign_vq.formats.posezip import PoseZip
from sign_vq.poses import skeleton

# Step of the MSE-optimal uniform quantizer of a unit Gaussian with 2**b levels, b = 1..6 (Max, 1960).
GAUSSIAN_STEP = np.array([1.596, 0.9957, 0.5860, 0.3352, 0.1881, 0.1041])


def read_poses(archive: Path, split: str) -> list[np.ndarray]:
    """The poses of one split of a pose zip as float32 frames x 178 x 3, NaN where a point is missing."""
    zipped = PoseZip(archive)
    return [zipped.read(entry).astype(np.float32).filled(np.nan) for entry in zipped.split(split)]


def ratios(poses: list[np.ndarray], reconstruct) -> dict[str, float]:
    """Per-part error ratios of ``reconstruct`` (pose -> reconstruction, frames x 178 x 3) over ``poses``."""
    metrics = ReconstructionMetrics(1, 1.0)  # codes and bits are not measured here
    for pose in poses:
        observed = ~np.isnan(pose).any(-1)
        target = torch.from_numpy(np.nan_to_num(pose))[None]
        recon = torch.from_numpy(reconstruct(pose).astype(np.float32))[None]
        metrics.update(recon, target, torch.from_numpy(observed)[None])
    result = metrics.compute()
    return {part: result[metric_name("ratio", part)] for part in skeleton.PARTS}


def kmeans(points: torch.Tensor, k: int, iterations: int = 25, seed: int = 0) -> torch.Tensor:
    """k centroids of ``points`` (N x D): k-means++ seeding, then Lloyd's algorithm (an empty cluster keeps its
    centroid)."""
    generator = torch.Generator().manual_seed(seed)
    centroids = points[torch.randint(len(points), (1,), generator=generator)]
    nearest_squared = torch.cdist(points, centroids).square().min(1).values
    for _ in range(k - 1):
        chosen = torch.multinomial(nearest_squared + 1e-12, 1, generator=generator)
        centroids = torch.cat([centroids, points[chosen]])
        nearest_squared = torch.minimum(nearest_squared, (points - points[chosen]).square().sum(1))
    for _ in range(iterations):
        nearest = torch.cdist(points, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, nearest, points)
        counts = torch.bincount(nearest, minlength=k)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


def principal_axes(rows: np.ndarray) -> np.ndarray:
    """Principal directions (components x features) of centred ``rows``."""
    return np.linalg.svd(rows - rows.mean(0), full_matrices=False)[2]


class Bounds:
    """The fitted pieces (global mean, static and per-part motion axes) and one codec per row."""

    def __init__(self, train: list[np.ndarray]):
        self.mean = np.nan_to_num(np.nanmean(np.concatenate(train), 0))
        self.train = [self.fill(pose) for pose in train]
        statics = np.stack([pose.mean(0).reshape(-1) for pose in self.train])
        self.static_mean, self.static_axes = statics.mean(0), principal_axes(statics)
        coefficients = (statics - self.static_mean) @ self.static_axes.T
        self.static_std = coefficients.std(0)
        deviations = np.concatenate([pose - pose.mean(0) for pose in self.train])
        self.motion_axes = [
            principal_axes(deviations[:, part].reshape(len(deviations), -1)) for part in skeleton.PARTS.values()
        ]

    def fill(self, pose: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(pose), self.mean, pose)

    def per_frame_vq(self, bits: int):
        frames = torch.from_numpy(np.concatenate(self.train).reshape(-1, skeleton.NUM_POINTS * skeleton.DIMS))
        centroids = kmeans(frames, 2**bits)

        def codec(pose: np.ndarray) -> np.ndarray:
            flat = torch.from_numpy(self.fill(pose).reshape(len(pose), -1))
            return centroids[torch.cdist(flat, centroids).argmin(1)].numpy().reshape(pose.shape)

        return codec

    def static(self, k: int | None = None, distortion: float | None = None):
        """Perfect motion; the pose mean from its first ``k`` static coefficients (unquantized), or from all of
        them quantized with the bits of reverse water-filling at ``distortion`` (bits per coefficient
        round(log2(std / sqrt(distortion))), uniform quantizer with the Gaussian-optimal step, clipped)."""
        axes = self.static_axes[:k]
        bits = None
        if distortion is not None:
            bits = np.clip(np.round(np.log2(self.static_std / np.sqrt(distortion))), 0, len(GAUSSIAN_STEP)).astype(int)
            step = self.static_std * GAUSSIAN_STEP[np.maximum(bits - 1, 0)]
            half_range = step * (2.0 ** (bits - 1))

        def codec(pose: np.ndarray) -> np.ndarray:
            filled = self.fill(pose)
            own = filled.mean(0)
            coefficients = (own.reshape(-1) - self.static_mean) @ axes.T
            if bits is not None:  # mid-rise levels at (i + 1/2) * step, i in [-2**(b-1), 2**(b-1) - 1]
                clipped = np.clip(coefficients, -half_range, half_range - 1e-9 * step)
                coefficients = np.where(bits > 0, (np.floor(clipped / step) + 0.5) * step, 0.0)
            static = (self.static_mean + coefficients @ axes).reshape(own.shape)
            return filled - own + static

        codec.bits = 0 if bits is None else int(bits.sum())
        return codec

    def motion(self, k: int):
        def codec(pose: np.ndarray) -> np.ndarray:
            filled = self.fill(pose)
            own = filled.mean(0)
            out = np.repeat(own[None], len(pose), 0)
            for part, axes in zip(skeleton.PARTS.values(), self.motion_axes):
                deviation = (filled - own)[:, part].reshape(len(pose), -1)
                out[:, part] += (deviation @ axes[:k].T @ axes[:k]).reshape(len(pose), -1, skeleton.DIMS)
            return out

        return codec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    parser.add_argument("--held-out", default=",".join(HELD_OUT))
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary folder)")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sign-vq-bounds-"))
    files = prepare(corpus(args.data), set(args.held_out.split(",")), work)
    train = read_poses(files["train"], "train")  # what the model trains on
    test = read_poses(files["test"], "val")
    frames = sum(len(w) for w in test)
    bounds = Bounds(train)
    rows = [("per-frame VQ, 10 bits", bounds.per_frame_vq(10), 10.0)]
    rows += [(f"static {k}", bounds.static(k), None) for k in (10, 30, 50, 100, 300)]
    for exponent in (8, 12, 16, 18, 20, 22):
        codec = bounds.static(distortion=bounds.static_std[0] ** 2 * 2.0**-exponent)
        rows.append((f"static, {codec.bits} bits a pose", codec, codec.bits * len(test) / frames))
    rows += [(f"motion {k}", bounds.motion(k), None) for k in (1, 2, 4, 8, 16)]
    print(f"\nbounds: train {len(train)} poses, test {len(test)} poses / {frames} frames "
          f"(mean {frames / len(test):.1f} frames, so 10 bits/frame = {10 * frames / len(test):.0f} bits a pose)")
    print(f"{'codec (given the rest for free)':<30}" + "".join(f"{n:>12}" for n in skeleton.PARTS) + f"{'bits/frame':>12}")
    for name, codec, bits in rows:
        values = ratios(test, codec)
        print(f"{name:<30}" + "".join(f"{values[n]:>12.2f}" for n in skeleton.PARTS)
              + (f"{bits:>12.1f}" if bits is not None else f"{'-':>12}"))


if __name__ == "__main__":
    main()

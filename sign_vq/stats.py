"""Per-point sufficient statistics (count, sum, sum of squares in float64) and their exact merge.

`sign-vq stats --output STATS SHARD...` merges the statistics stored in normalize shards into the dataset
mean/std (a JSON file) that training standardizes with and saves into the model.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sign_vq import skeleton
from sign_vq.errors import UserError
from sign_vq.fileio import atomic_open

HELP = "merge the per-point statistics of normalize shards into the dataset mean/std"
SHAPE = (skeleton.NUM_POINTS, skeleton.DIMS)


@dataclass
class PointStats:
    """Sums over unmasked values, per point and axis (178 x 3)."""

    count: np.ndarray
    sum: np.ndarray
    sumsq: np.ndarray

    @classmethod
    def zeros(cls) -> "PointStats":
        return cls(np.zeros(SHAPE, np.int64), np.zeros(SHAPE, np.float64), np.zeros(SHAPE, np.float64))

    def add(self, pose: np.ma.MaskedArray) -> None:
        """Accumulate one pose (frames x 178 x 3 masked array); only unmasked values count."""
        values = pose.astype(np.float64).filled(0.0)
        observed = ~np.ma.getmaskarray(pose)
        self.count += observed.sum(axis=0)
        self.sum += values.sum(axis=0)
        self.sumsq += np.square(values).sum(axis=0)

    def add_values(self, data: np.ndarray, mask: np.ndarray) -> None:
        """Accumulate one pose given as values (frames x 178 x 3) and a per-point mask (frames x 178, True = missing).

        The same sums as :meth:`add` on the equivalent masked array, without the masked-array overhead.
        """
        frames = len(data)
        values = data.reshape(frames, -1).astype(np.float64)  # frames x (178*3): contiguous loops, no broadcasts
        values[np.repeat(mask, SHAPE[1], axis=1)] = 0.0
        self.count += (~mask).sum(axis=0, dtype=np.int64)[:, None]
        self.sum += values.sum(axis=0).reshape(SHAPE)
        values *= values
        self.sumsq += values.sum(axis=0).reshape(SHAPE)

    def merge(self, other: "PointStats") -> "PointStats":
        return PointStats(self.count + other.count, self.sum + other.sum, self.sumsq + other.sumsq)

    @property
    def mean(self) -> np.ndarray:
        """Mean per point and axis; 0 where a point was never seen."""
        return np.divide(self.sum, self.count, out=np.zeros(SHAPE), where=self.count > 0)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation; 0 where a point was never seen (never NaN)."""
        second = np.divide(self.sumsq, self.count, out=np.zeros(SHAPE), where=self.count > 0)
        return np.sqrt(np.maximum(second - np.square(self.mean), 0.0))

    def to_dict(self) -> dict:
        return {
            "points": skeleton.NUM_POINTS,
            "count": self.count.tolist(),
            "sum": self.sum.tolist(),
            "sumsq": self.sumsq.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_dict(cls, payload: dict, source: str) -> "PointStats":
        try:
            stats = cls(
                np.asarray(payload["count"], np.int64),
                np.asarray(payload["sum"], np.float64),
                np.asarray(payload["sumsq"], np.float64),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(f"{source}: not a sign-vq statistics file ({error}); rerun `sign-vq stats`") from None
        if stats.count.shape != SHAPE or stats.sum.shape != SHAPE or stats.sumsq.shape != SHAPE:
            raise UserError(
                f"{source}: statistics for {stats.count.shape[0]} points, expected {skeleton.NUM_POINTS} x 3; "
                "rerun `sign-vq stats` on shards of this version"
            )
        return stats


def load_stats(path: str | Path) -> PointStats:
    """Read a statistics JSON written by `sign-vq stats`."""
    try:
        payload = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such statistics file; run `sign-vq stats` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: corrupt statistics file ({error}); rerun `sign-vq stats`") from None
    return PointStats.from_dict(payload, str(path))


def write_stats(stats: PointStats, path: str | Path) -> None:
    with atomic_open(path) as handle:
        json.dump(stats.to_dict(), handle)


def merge_shards(shards: list[str | Path]) -> PointStats:
    """The exact merge of the statistics stored in each shard's index."""
    from sign_vq.posezip import PoseZip

    total = PointStats.zeros()
    for shard in shards:
        zipped = PoseZip(shard)
        if "stats" not in zipped.index:
            raise UserError(f"{shard}: has no statistics; is it a normalize shard (not an archive)?")
        total = total.merge(PointStats.from_dict(zipped.index["stats"], str(shard)))
    return total


def add_arguments(parser: argparse.ArgumentParser, _stage: str) -> None:
    parser.add_argument("--output", required=True, type=Path, help="statistics JSON to write")
    parser.add_argument("shards", nargs="+", type=Path, metavar="SHARD", help="normalize shards (.zip)")


def run(args: argparse.Namespace) -> None:
    stats = merge_shards(args.shards)
    write_stats(stats, args.output)


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("stats")

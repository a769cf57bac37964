"""Per-point sufficient statistics (count, sum, sum of squares in float64), their exact merge, and the statistics
file training standardizes with. Statistics are validated when merged and when loaded (:func:`check`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sign_vq.errors import UserError
from sign_vq.fileio import write_json
from sign_vq.poses import skeleton
from sign_vq.poses.preprocess import FLOAT16_MAX

SHAPE = (skeleton.NUM_POINTS, skeleton.DIMS)
RTOL = 1e-6  # float64 rounding allowed between sums, and between the sums and a stored mean/std


@dataclass
class PointStats:
    """Sums over unmasked values, per point and axis (178 x 3)."""

    count: np.ndarray
    sum: np.ndarray
    sumsq: np.ndarray

    @classmethod
    def zeros(cls) -> "PointStats":
        return cls(np.zeros(SHAPE, np.int64), np.zeros(SHAPE, np.float64), np.zeros(SHAPE, np.float64))

    def add_values(self, data: np.ndarray, mask: np.ndarray) -> None:
        """Accumulate one pose given as values (frames x 178 x 3) and a per-point mask (frames x 178, True = missing);
        only observed values count."""
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
        """Statistics from their JSON form, validated (:func:`check`); each problem is a UserError naming ``source``."""
        try:
            count, total, sumsq = (np.asarray(payload[key], np.float64) for key in ("count", "sum", "sumsq"))
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(f"{source}: not a sign-vq statistics file ({error}); rerun `sign-vq stats`") from None
        if count.shape != SHAPE or total.shape != SHAPE or sumsq.shape != SHAPE:
            raise UserError(
                f"{source}: statistics for {count.shape[0] if count.ndim else 0} points, expected "
                f"{skeleton.NUM_POINTS} x 3; rerun `sign-vq stats` on shards of this version"
            )
        with np.errstate(invalid="ignore"):
            not_counts = ~np.isfinite(count) | (count != np.round(count)) | (count < 0)
        if not_counts.any():
            raise _invalid(source, "counts that are not whole numbers >= 0", not_counts)
        stats = cls(count.astype(np.int64), total, sumsq)
        check(stats, source)
        for key in ("mean", "std"):
            if key in payload:
                stored = np.asarray(payload[key], np.float64)
                if stored.shape != SHAPE or not np.allclose(stored, getattr(stats, key), rtol=RTOL, atol=1e-9):
                    raise UserError(
                        f"{source}: its {key} disagrees with its sums (edited or damaged); rerun `sign-vq stats`"
                    )
        return stats


def _invalid(source: str, problem: str, where: np.ndarray) -> UserError:
    point, axis = np.argwhere(where)[0]
    return UserError(
        f"{source}: invalid statistics: {problem} (first at point {point}, axis {'xyz'[axis]}); rerun `sign-vq stats`, "
        "and `sign-vq normalize` for a shard that has them"
    )


def check(stats: PointStats, source: str) -> None:
    """Refuse statistics that cannot come from float16 poses: non-finite sums, sums where nothing was counted, a
    sum of squares below ``sum²/count`` (negative variance), a mean or spread beyond float16."""
    count, total, sumsq = stats.count, stats.sum, stats.sumsq
    seen = count > 0
    with np.errstate(invalid="ignore", over="ignore"):
        second = np.divide(sumsq, count, out=np.zeros(SHAPE), where=seen)
        mean = stats.mean
        beyond = (np.abs(mean) > FLOAT16_MAX) | (second > FLOAT16_MAX**2)
        problems = [
            ("non-finite sums", ~np.isfinite(total) | ~np.isfinite(sumsq)),
            ("sums for a point never seen", ~seen & ((total != 0) | (sumsq != 0))),
            ("a mean or spread beyond the float16 range of poses", beyond),
            ("a sum of squares below sum²/count (negative variance)", second - np.square(mean) < -RTOL * second - 1e-12),
        ]
    for problem, where in problems:
        if where.any():
            raise _invalid(source, problem, where)


def check_usable(stats: PointStats, source: str) -> None:
    """Refuse dataset statistics with no point seen twice: every std would be 0 (then the model's floor of
    0.01), so training would standardize with nothing real."""
    if stats.count.max() < 2:
        raise UserError(
            f"{source}: invalid statistics: no point was seen twice (every std would be 0); "
            "rerun `sign-vq stats` on the shards of your data"
        )


def load_stats(path: str | Path) -> PointStats:
    """Read a statistics JSON written by `sign-vq stats`."""
    try:
        payload = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such statistics file; run `sign-vq stats` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: corrupt statistics file ({error}); rerun `sign-vq stats`") from None
    if not isinstance(payload, dict):
        raise UserError(f"{path}: not a sign-vq statistics file (a JSON object is expected); rerun `sign-vq stats`")
    stats = PointStats.from_dict(payload, str(path))
    check_usable(stats, str(path))
    return stats


def write_stats(stats: PointStats, path: str | Path) -> None:
    write_json(path, stats.to_dict(), indent=None)


def merge_shards(shards: list[str | Path]) -> PointStats:
    """The exact merge of the statistics stored in each shard's metadata (its pose index is never read)."""
    from sign_vq.formats.posezip import read_meta

    total = PointStats.zeros()
    for shard in shards:
        meta = read_meta(shard)
        if "stats" not in meta:
            raise UserError(f"{shard}: has no statistics; is it a normalize shard (not an archive)?")
        total = total.merge(PointStats.from_dict(meta["stats"], str(shard)))
    check_usable(total, f"the statistics merged from {len(shards)} shard(s) ({shards[0]} ...)")
    return total

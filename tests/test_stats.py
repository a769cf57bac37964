"""Statistics are validated when merged (`sign-vq stats`) and when loaded (`load_stats`): one line naming the file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from sign_vq.cli import main
from sign_vq.errors import UserError
from sign_vq.formats.statistics import PointStats, load_stats, merge_shards, write_stats
from sign_vq.formats.zipwriter import PoseZipWriter

RERUN = "rerun `sign-vq stats`, and `sign-vq normalize` for a shard that has them"


def good_stats() -> PointStats:
    rng = np.random.default_rng(0)
    stats = PointStats.zeros()
    for frames in (5, 9):
        stats.add_values(rng.normal(size=(frames, 178, 3)).astype(np.float16), np.zeros((frames, 178), bool))
    return stats


def shard_with(path: Path, payload: dict) -> Path:
    with PoseZipWriter(path) as writer:
        writer.add("a", np.zeros((1, 178, 3), np.float16), np.zeros((1, 178), bool), {})
        writer.close(stats=payload)
    return path


def broken(key: str, point: int, axis: int, value) -> dict:
    payload = good_stats().to_dict()
    payload[key][point][axis] = value
    return {k: v for k, v in payload.items() if k not in ("mean", "std")}


CASES = [
    (broken("sum", 3, 1, float("nan")), "non-finite sums (first at point 3, axis y)"),
    (broken("sumsq", 0, 2, float("inf")), "non-finite sums (first at point 0, axis z)"),
    (broken("count", 5, 0, -4), "counts that are not whole numbers >= 0 (first at point 5, axis x)"),
    (broken("count", 6, 0, 2.5), "counts that are not whole numbers >= 0 (first at point 6, axis x)"),
    (broken("count", 7, 2, 0), "sums for a point never seen (first at point 7, axis z)"),
    (broken("sumsq", 8, 0, 0.0), "a sum of squares below sum²/count (negative variance) (first at point 8, axis x)"),
    (broken("sum", 9, 1, 1e12), "a mean or spread beyond the float16 range of poses (first at point 9, axis y)"),
]
IDS = ["nan-sum", "inf-sumsq", "negative-count", "fractional-count", "unseen-with-sums", "negative-variance", "huge"]


@pytest.mark.parametrize("payload, problem", CASES, ids=IDS)
def test_invalid_shard_statistics_fail_the_merge_naming_the_shard(tmp_path, caplog, payload, problem):
    shard = shard_with(tmp_path / "shard.zip", payload)
    output = tmp_path / "stats.json"
    with caplog.at_level(logging.ERROR, logger="sign_vq"):
        assert main(["stats", "--output", str(output), str(shard)]) == 2
    assert caplog.messages == [f"{shard}: invalid statistics: {problem}; {RERUN}"]
    assert not output.exists()


@pytest.mark.parametrize("payload, problem", CASES, ids=IDS)
def test_invalid_statistics_file_fails_when_loaded(tmp_path, payload, problem):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(UserError) as caught:
        load_stats(path)
    assert str(caught.value) == f"{path}: invalid statistics: {problem}; {RERUN}"


def test_edited_mean_or_std_and_unusable_counts_are_refused(tmp_path):
    path = tmp_path / "stats.json"
    for key in ("mean", "std"):
        payload = good_stats().to_dict()
        payload[key][2][0] += 1.0
        path.write_text(json.dumps(payload))
        with pytest.raises(UserError) as caught:
            load_stats(path)
        assert str(caught.value) == f"{path}: its {key} disagrees with its sums (edited or damaged); rerun `sign-vq stats`"
    once = PointStats.zeros()
    once.add_values(np.ones((1, 178, 3), np.float16), np.zeros((1, 178), bool))  # every point seen once: std 0
    write_stats(once, path)
    with pytest.raises(UserError) as caught:
        load_stats(path)
    assert str(caught.value) == (
        f"{path}: invalid statistics: no point was seen twice (every std would be 0); "
        "rerun `sign-vq stats` on the shards of your data"
    )
    path.write_text("[1, 2]")
    with pytest.raises(UserError, match="a JSON object is expected"):
        load_stats(path)


def test_valid_statistics_round_trip_through_merge_and_load(tmp_path):
    stats = good_stats()
    shards = [shard_with(tmp_path / f"{name}.zip", stats.to_dict()) for name in ("a", "b")]
    merged = merge_shards(shards)
    assert np.array_equal(merged.count, 2 * stats.count) and np.allclose(merged.sum, 2 * stats.sum)
    write_stats(merged, tmp_path / "stats.json")
    assert np.array_equal(load_stats(tmp_path / "stats.json").sumsq, merged.sumsq)

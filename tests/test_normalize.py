"""Per-shard normalize, the exact statistics merge and their command lines (the pose zip: test_posezip.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FULL_468, HANDS_ONLY, OPENPOSE, OUTLIER_FILES, relative
from sign_vq.cli import build_parser, main
from sign_vq.dataset.normalize import normalize_shard, pose_id
from sign_vq.errors import BadPoseError, UserError
from sign_vq.formats.posezip import PoseZip
from sign_vq.formats.shards import read_list
from sign_vq.formats.statistics import PointStats, load_stats, merge_shards
from sign_vq.formats.zipwriter import PoseZipWriter
from sign_vq.poses import preprocess, skeleton
from test_preprocess import HOSTILE_FRAMES, few_shoulders, hostile_pose, moved

NEVER_SEEN_LEFT_HAND = "pose-format/0ff215ef4f1f111e217e2cefee0adc77.pose"  # the left hand is never detected


def leftovers(folder: Path) -> list[str]:
    """Temporary files of atomic writes left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


def report_of(shard: Path, suffix: str = ".report.json") -> dict:
    return json.loads(shard.with_name(shard.name + suffix).read_text())


@pytest.fixture(scope="module")
def some_good(data_dir) -> list[Path]:
    """A small varied set of good files: full 468/478, reduced v0.1, non-integer fps, an outlier file."""
    names = [
        FULL_468,
        "pose-format/84322c38ff23406f222641da30d0a49b.pose",
        NEVER_SEEN_LEFT_HAND,
        "lexicon/essen.pose",
        "lexicon/pizza.pose",
        OUTLIER_FILES[1],
    ]
    files = [data_dir / n for n in names]
    files += sorted((data_dir / "fingerspelling").glob("*/*.pose"))[:6]
    return files


@pytest.fixture(scope="module")
def real_bad(data_dir) -> list[Path]:
    return [data_dir / OPENPOSE, data_dir / HANDS_ONLY[0]]


# ---------------------------------------------------------------------------------------------------- shard


def test_shard_holds_good_files_and_reports_bad_ones(tmp_path, data_dir, some_good, real_bad):
    empty = tmp_path / "in" / "empty.pose"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    files = [*some_good[:3], real_bad[0], *some_good[3:], empty, real_bad[1]]
    shard = tmp_path / "out" / "shard.zip"
    report = normalize_shard(files, shard, root=data_dir, max_bad_fraction=0.5)

    assert shard.is_file() and leftovers(shard.parent) == []
    on_disk = report_of(shard)
    assert on_disk == report
    assert (report["files"], report["ok"], report["bad"]) == (len(files), len(some_good), 3)
    bad = {Path(b["file"]): b["reason"] for b in report["bad_files"]}
    assert set(bad) == {real_bad[0], real_bad[1], empty}
    assert "2-D" in bad[real_bad[0]] and str(real_bad[0]) in bad[real_bad[0]]
    assert "missing component(s)" in bad[real_bad[1]]
    assert "outside the input folder" in bad[empty], "a listed file outside --root is never read"

    zipped = PoseZip(shard)
    assert [e["id"] for e in zipped.entries] == [relative(p)[: -len(".pose")] for p in some_good]
    frames = outliers = 0
    for path, (entry, masked) in zip(some_good, zipped):
        expected = preprocess.preprocess_file(path)
        assert masked.dtype == np.float16 and masked.shape == expected.data.shape
        assert np.array_equal(np.ma.getmaskarray(masked).any(-1), expected.mask)
        assert np.array_equal(masked.filled(0), expected.data)
        assert entry["fps"] == expected.fps and entry["frames"] == expected.frames
        assert entry["scale"] == expected.scale and entry["center"] == list(expected.center)
        assert entry["outliers"] == expected.outliers
        frames += expected.frames
        outliers += expected.outliers
    assert report["frames"] == frames and report["outlier_points"] == outliers > 0
    assert zipped.index["report"]["ok"] == len(some_good)
    assert "stats" in zipped.index


def test_shard_fails_above_the_bad_fraction_and_writes_nothing(tmp_path, some_good, real_bad):
    files = [some_good[0], *real_bad]  # 2 of 3 bad
    shard = tmp_path / "shard.zip"
    with pytest.raises(UserError) as caught:
        normalize_shard(files, shard, max_bad_fraction=0.5)
    message = str(caught.value)
    assert str(shard) in message and "2 of 3 files are bad" in message and "shard.zip.failed.json" in message
    assert not shard.exists()
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard.zip.failed.json"]  # the reasons are kept
    assert len(report_of(shard, ".failed.json")["bad_files"]) == 2


def test_failing_rerun_keeps_the_previous_shard(tmp_path, some_good, real_bad):
    shard = tmp_path / "shard.zip"
    normalize_shard(some_good[:2], shard)
    before = shard.read_bytes()
    report_before = report_of(shard)
    with pytest.raises(UserError):
        normalize_shard([some_good[0], *real_bad], shard, max_bad_fraction=0.1)
    assert shard.read_bytes() == before
    assert report_of(shard) == report_before  # the good shard's report still describes it
    assert len(report_of(shard, ".failed.json")["bad_files"]) == 2
    assert leftovers(tmp_path) == []
    assert len(PoseZip(shard)) == 2
    normalize_shard(some_good[:2], shard)  # a later success clears the failure report
    assert not shard.with_name("shard.zip.failed.json").exists()


def test_bad_fraction_boundary(tmp_path, some_good, real_bad):
    files = [*some_good[:2], *real_bad]  # exactly half bad: allowed at 0.5, not below
    assert normalize_shard(files, tmp_path / "a.zip", max_bad_fraction=0.5)["ok"] == 2
    with pytest.raises(UserError):
        normalize_shard(files, tmp_path / "b.zip", max_bad_fraction=0.49)
    assert not (tmp_path / "b.zip").exists()


def test_shard_without_files_fails(tmp_path):
    with pytest.raises(UserError, match="no input files"):
        normalize_shard([], tmp_path / "shard.zip")
    assert not (tmp_path / "shard.zip").exists() and leftovers(tmp_path) == []


def test_duplicate_pose_ids_fail_without_a_shard(tmp_path, some_good):
    with pytest.raises(UserError, match="occurs twice"):
        normalize_shard([some_good[0], some_good[0]], tmp_path / "shard.zip")
    assert not (tmp_path / "shard.zip").exists() and leftovers(tmp_path) == []


def test_pose_ids_are_relative_to_root(data_dir):
    path = data_dir / "lexicon" / "essen.pose"
    assert pose_id(path, data_dir) == "lexicon/essen"
    with pytest.raises(BadPoseError, match="outside the input folder"):
        pose_id(path, data_dir / "fingerspelling")


def test_options_reach_preprocessing(tmp_path, data_dir):
    path = data_dir / FULL_468
    normalize_shard([path], tmp_path / "a.zip", outlier_limit=0.5, fix_wrists=False)
    (entry, masked), = PoseZip(tmp_path / "a.zip")
    expected = preprocess.preprocess_file(path, outlier_limit=0.5, fix_wrists=False)
    assert entry["outliers"] == expected.outliers > 0
    assert np.array_equal(masked.filled(0), expected.data)


# ---------------------------------------------------------------------------------------------- statistics


def direct_stats(files: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """count, sum, sum of squares over the unmasked values of all files, computed here from scratch."""
    count = np.zeros((178, 3), np.int64)
    total = np.zeros((178, 3))
    squares = np.zeros((178, 3))
    for path in files:
        pose = preprocess.preprocess_file(path)
        seen = ~pose.mask
        values = pose.data.astype(np.float64)
        count += seen.sum(0)[:, None]
        total += np.where(seen[..., None], values, 0).sum(0)
        squares += np.where(seen[..., None], values**2, 0).sum(0)
    return count, total, squares


def test_merged_shard_statistics_equal_one_shard_of_all_files(tmp_path, good_files):
    files = good_files[::4]  # ~120 files of every kind
    half = len(files) // 2
    normalize_shard(files[:half], tmp_path / "a.zip")
    normalize_shard(files[half:], tmp_path / "b.zip")
    normalize_shard(files, tmp_path / "all.zip")
    merged = merge_shards([tmp_path / "a.zip", tmp_path / "b.zip"])
    single = merge_shards([tmp_path / "all.zip"])
    assert np.array_equal(merged.count, single.count)
    np.testing.assert_allclose(merged.sum, single.sum, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(merged.sumsq, single.sumsq, rtol=1e-12)
    np.testing.assert_allclose(merged.mean, single.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged.std, single.std, rtol=1e-9, atol=1e-12)

    count, total, squares = direct_stats(files)
    assert np.array_equal(single.count, count)
    np.testing.assert_allclose(single.sum, total, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(single.sumsq, squares, rtol=1e-12)
    seen = count > 0
    mean = total[seen] / count[seen]
    np.testing.assert_allclose(single.mean[seen], mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(single.std[seen], np.sqrt(np.maximum(squares[seen] / count[seen] - mean**2, 0)),
                               rtol=1e-8, atol=1e-10)


def test_merge_is_order_independent_and_has_a_neutral_element(tmp_path, some_good):
    normalize_shard(some_good[:3], tmp_path / "a.zip")
    normalize_shard(some_good[3:], tmp_path / "b.zip")
    ab = merge_shards([tmp_path / "a.zip", tmp_path / "b.zip"])
    ba = merge_shards([tmp_path / "b.zip", tmp_path / "a.zip"])
    assert np.array_equal(ab.count, ba.count) and np.array_equal(ab.sum, ba.sum)  # two terms commute exactly
    zero = PointStats.zeros().merge(ab)
    assert np.array_equal(zero.sum, ab.sum) and np.array_equal(zero.count, ab.count)


def test_never_seen_points_have_zero_std_not_nan(tmp_path, data_dir, lexicon_files):
    path = data_dir / NEVER_SEEN_LEFT_HAND
    assert preprocess.preprocess_file(path).mask[:, skeleton.PARTS["left_hand"]].all()
    normalize_shard([path], tmp_path / "one.zip")
    normalize_shard(lexicon_files, tmp_path / "lexicon.zip")
    for shards in ([tmp_path / "one.zip"], [tmp_path / "lexicon.zip"], [tmp_path / "one.zip", tmp_path / "lexicon.zip"]):
        stats = merge_shards(shards)
        assert np.isfinite(stats.mean).all() and np.isfinite(stats.std).all() and (stats.std >= 0).all()
    alone = merge_shards([tmp_path / "one.zip"])
    never = alone.count == 0
    assert never[skeleton.PARTS["left_hand"]].all()
    assert (alone.mean[never] == 0).all() and (alone.std[never] == 0).all()
    assert (alone.std[~never] > 0).any()
    assert PointStats.zeros().std.sum() == 0 and np.isfinite(PointStats.zeros().mean).all()


def test_stats_file_round_trip(tmp_path, some_good):
    normalize_shard(some_good, tmp_path / "a.zip")
    stats = merge_shards([tmp_path / "a.zip"])
    from sign_vq.formats.statistics import write_stats

    write_stats(stats, tmp_path / "stats.json")
    text = (tmp_path / "stats.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    again = load_stats(tmp_path / "stats.json")
    assert np.array_equal(again.count, stats.count) and np.array_equal(again.sum, stats.sum)
    assert np.array_equal(again.sumsq, stats.sumsq)


def test_stats_errors_name_the_file(tmp_path, some_good):
    with pytest.raises(UserError, match="no such statistics file"):
        load_stats(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt statistics"):
        load_stats(tmp_path / "bad.json")
    (tmp_path / "small.json").write_text(json.dumps({"count": [[1, 1, 1]], "sum": [[0, 0, 0]], "sumsq": [[0, 0, 0]]}))
    with pytest.raises(UserError, match="expected 178"):
        load_stats(tmp_path / "small.json")
    writer = PoseZipWriter(tmp_path / "archive.zip")
    writer.close()
    with pytest.raises(UserError, match="has no statistics"):
        merge_shards([tmp_path / "archive.zip"])


# ------------------------------------------------------------------------------------------------ command line


def test_cli_normalize_and_stats(tmp_path, data_dir, some_good, real_bad):
    shard_a, shard_b = tmp_path / "a.zip", tmp_path / "b.zip"
    assert main(["normalize", "--output", str(shard_a), "--root", str(data_dir), *map(str, some_good[:4])]) == 0
    listing = tmp_path / "lists" / "b.txt"
    listing.parent.mkdir()
    listing.write_text("\n".join(["# shard b", "", *(str(p) for p in [*some_good[4:], real_bad[0]])]) + "\n")
    assert read_list(listing) == [*some_good[4:], real_bad[0]]
    assert main(["normalize", "--output", str(shard_b), "--files-from", str(listing), "--max-bad-fraction", "0.2"]) == 0
    assert report_of(shard_b)["bad"] == 1

    stats_path = tmp_path / "stats" / "stats.json"
    assert main(["stats", "--output", str(stats_path), str(shard_a), str(shard_b)]) == 0
    payload = json.loads(stats_path.read_text())
    assert {"count", "sum", "sumsq", "mean", "std"} <= set(payload)
    assert np.array(payload["mean"]).shape == (178, 3)
    expected = merge_shards([shard_a, shard_b])
    assert np.array_equal(load_stats(stats_path).count, expected.count)
    assert sum(len(PoseZip(s)) for s in (shard_a, shard_b)) == len(some_good)


def test_cli_relative_file_list(tmp_path, data_dir):
    # paths in a list are relative to the list's folder
    (tmp_path / "poses").symlink_to(data_dir)
    files = tmp_path / "files.txt"
    files.write_text("poses/lexicon/essen.pose\nposes/lexicon/pizza.pose\n")
    assert main(["normalize", "--output", str(tmp_path / "s.zip"), "--files-from", str(files),
                 "--root", str(tmp_path / "poses")]) == 0
    assert [e["id"] for e in PoseZip(tmp_path / "s.zip").entries] == ["lexicon/essen", "lexicon/pizza"]


def test_cli_normalize_takes_folders_like_encode(tmp_path, some_good):
    """A folder stands for its *.pose files (recursively, as for `encode`); the ids are relative to a folder given
    alone, else to --root; what cannot be a pose file there is a bad file of the report, never opened."""
    folder = tmp_path / "poses"
    (folder / "sub").mkdir(parents=True)
    for name, path in zip("abc", some_good):
        (folder / "sub" / f"{name}.pose").symlink_to(path)
    (folder / "notes.txt").write_text("not a pose")
    os.mkfifo(folder / "fifo.pose")
    (folder / "dir.pose").mkdir()
    shard = tmp_path / "s.zip"
    assert main(["normalize", "--output", str(shard), str(folder)]) == 0
    assert [e["id"] for e in PoseZip(shard).entries] == ["sub/a", "sub/b", "sub/c"]
    report = report_of(shard)
    assert (report["files"], report["ok"]) == (5, 3)
    assert [(bad["file"], bad["reason"]) for bad in report["bad_files"]] == [
        (str(folder / "dir.pose"), "a folder, not a pose file"), (str(folder / "fifo.pose"), "not a regular file")]

    (tmp_path / "d.pose").symlink_to(some_good[3])
    mixed = tmp_path / "mixed.zip"
    assert main(["normalize", "--output", str(mixed), "--root", str(tmp_path), str(folder), str(tmp_path / "d.pose")]) == 0
    assert [e["id"] for e in PoseZip(mixed).entries] == ["poses/sub/a", "poses/sub/b", "poses/sub/c", "d"]  # in input order


def test_cli_fails_with_exit_status_2(tmp_path, some_good, real_bad):
    shard = tmp_path / "s.zip"
    status = main(["normalize", "--output", str(shard), "--max-bad-fraction", "0.1", str(some_good[0]), *map(str, real_bad)])
    assert status == 2
    assert not shard.exists() and leftovers(tmp_path) == []
    assert main(["normalize", "--output", str(shard), "--files-from", str(tmp_path / "missing.txt")]) == 2
    assert main(["stats", "--output", str(tmp_path / "st.json"), str(tmp_path / "missing.zip")]) == 2
    assert not (tmp_path / "st.json").exists()


# ---------------------------------------------------------------------------- hostile input (issue 13)


@pytest.mark.parametrize(
    "flag, value, problem",
    [
        ("--outlier-limit", "-3", "-3 is outside (0, inf]"),
        ("--outlier-limit", "0", "0 is outside (0, inf]"),
        ("--outlier-limit", "nan", "nan is outside (0, inf]"),
        ("--outlier-limit", "five", "'five' is not a number; expected one in (0, inf]"),
        ("--max-bad-fraction", "-0.1", "-0.1 is outside [0, 1]"),
        ("--max-bad-fraction", "1.5", "1.5 is outside [0, 1]"),
        ("--max-bad-fraction", "nan", "nan is outside [0, 1]"),
    ],
)
def test_normalize_flags_out_of_range_are_parser_errors(tmp_path, data_dir, capsys, flag, value, problem):
    shard = tmp_path / "s.zip"
    with pytest.raises(SystemExit) as exited:
        main(["normalize", "--output", str(shard), f"{flag}={value}", str(data_dir / "lexicon" / "essen.pose")])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"sign-vq normalize: error: argument {flag}: {problem}"
    assert not shard.exists()


@pytest.mark.parametrize("value", ["-1", "1", "2", "nan", "-inf"])
def test_archive_val_fraction_out_of_range_is_a_parser_error(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exited:
        main(["archive", "--output", str(tmp_path / "a.zip"), f"--val-fraction={value}", str(tmp_path / "s.zip")])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == f"sign-vq archive: error: argument --val-fraction: {value} is outside [0, 1)"


def test_numeric_flags_accept_their_bounds():
    normalize = build_parser("normalize").parse_args(
        ["normalize", "--output", "s.zip", "--outlier-limit", "inf", "--max-bad-fraction", "1", "a.pose"]
    )
    assert (normalize.outlier_limit, normalize.max_bad_fraction) == (np.inf, 1.0)
    lowest = build_parser("normalize").parse_args(["normalize", "--output", "s", "--max-bad-fraction", "0", "a"])
    assert lowest.max_bad_fraction == 0
    archive = build_parser("archive").parse_args(["archive", "--output", "a.zip", "--val-fraction", "0.999", "s.zip"])
    assert archive.val_fraction == 0.999
    lowest = build_parser("archive").parse_args(["archive", "--output", "a", "--val-fraction", "0", "s"])
    assert lowest.val_fraction == 0


def seen_in_two_frames(data, confidence, index):
    """Nothing detected but in frames 10 and 60 (of 97)."""
    confidence[np.setdiff1d(np.arange(len(confidence)), [10, 60])] = 0


def test_hostile_values_never_reach_a_shard_or_the_statistics(data_dir, tmp_path):
    """Shoulder glitches (10^4 px, 3*10^38), a point beyond float16, shoulders or everything seen in 2 of 97 frames:
    all normalize (outlier limit off: float16 is the only limit), the far points are masked and counted, every stored
    value and the statistics are finite."""
    files = [
        hostile_pose(data_dir, tmp_path, moved(("LEFT_SHOULDER",), 1e4), "shoulder-1e4.pose"),
        hostile_pose(data_dir, tmp_path, moved(("LEFT_SHOULDER",), 3e38), "shoulder-3e38.pose"),
        hostile_pose(data_dir, tmp_path, moved(("LEFT_HIP",), 1e9), "hip-1e9.pose"),
        hostile_pose(data_dir, tmp_path, few_shoulders, "two-shoulder-frames.pose"),
        hostile_pose(data_dir, tmp_path, seen_in_two_frames, "two-frames.pose"),
    ]
    shard, stats = tmp_path / "shard.zip", tmp_path / "stats.json"
    command = ["normalize", "--output", str(shard), "--root", str(tmp_path), "--outlier-limit", "inf"]
    assert main([*command, *map(str, files)]) == 0
    report = report_of(shard)
    assert (report["ok"], report["bad"], report["outlier_points"]) == (5, 0, 2)  # the 3e38 shoulder, the 1e9 hip
    poses = {entry["id"]: masked for entry, masked in PoseZip(shard)}
    assert all(np.isfinite(masked.compressed()).all() for masked in poses.values())
    assert all(masked.shape[0] == HOSTILE_FRAMES for masked in poses.values())
    seen = ~np.ma.getmaskarray(poses["two-frames"]).all(axis=(1, 2))
    assert np.flatnonzero(seen).tolist() == [10, 60]
    assert main(["stats", "--output", str(stats), str(shard)]) == 0
    payload = json.loads(stats.read_text())
    assert all(np.isfinite(np.array(payload[key], dtype=float)).all() for key in ("mean", "std"))


def test_a_fifo_named_pose_is_skipped_and_reported_never_opened(tmp_path, some_good):
    """A FIFO blocks whoever opens it: normalize must never open one (run as a command, bounded, so a hang fails)."""
    fifo = tmp_path / "fifo.pose"
    os.mkfifo(fifo)
    shard = tmp_path / "s.zip"
    command = [sys.executable, "-m", "sign_vq.cli", "normalize", "--output", str(shard), str(some_good[0]), str(fifo)]
    assert subprocess.run(command, capture_output=True, timeout=120).returncode == 0
    assert report_of(shard)["bad_files"] == [
        {"file": str(fifo), "reason": f"{fifo}: cannot read (not a regular file (a FIFO, device, socket or folder)); "
                                      "expected a readable .pose file"}
    ]
    assert len(PoseZip(shard)) == 1

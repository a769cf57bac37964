"""The pose zip (format 2): a standard zip, a compact memory-mapped index, reads by offset, clear errors."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from fixtures_model import make_checkpoint
from sign_vq.cli import main
from sign_vq.dataset.archive import build_archive
from sign_vq.dataset.normalize import memory_mb
from sign_vq.errors import UserError
from sign_vq.formats import zipwriter
from sign_vq.formats.posezip import PoseZip, read_meta
from sign_vq.formats.ziplayout import COLUMNS
from sign_vq.formats.zipwriter import PoseZipWriter

FIX = "delete the file and rerun the stage that wrote it"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def write_poses(path: Path, poses: dict[str, tuple[np.ndarray, np.ndarray]], tamper=None, **index) -> Path:
    """A pose zip of ``poses``; ``tamper(rows)`` may change the index rows before they are written (a lying index
    with valid checksums)."""
    with PoseZipWriter(path) as writer:
        for pose_id, (data, mask) in poses.items():
            writer.add(pose_id, data, mask, {"fps": 25.0, "center": [1.0, 2.0, 3.0], "scale": 4.0})
        if tamper:
            tamper(writer._table.rows)
        writer.close(**index)
    return path


def ones(frames: int) -> tuple[np.ndarray, np.ndarray]:
    return np.ones((frames, 178, 3), np.float16), np.zeros((frames, 178), bool)


@pytest.fixture
def small_zip(tmp_path) -> Path:
    return write_poses(tmp_path / "p.zip", {"a": ones(50), "b": ones(3)})


def error_of(call) -> str:
    with pytest.raises(UserError) as caught:
        call()
    return str(caught.value)


def test_round_trip_and_a_standard_zip(tmp_path):
    rng = np.random.default_rng(0)
    poses = {}
    for i, frames in enumerate((1, 7, 40)):
        data = rng.normal(size=(frames, 178, 3)).astype(np.float16)
        mask = rng.random((frames, 178)) < 0.2
        data[mask] = 0
        poses[f"dir/pose{i}"] = (data, mask)
    path = write_poses(tmp_path / "p.zip", poses, extra={"key": 1})
    zipped = PoseZip(path)
    assert zipped.index["extra"] == {"key": 1} and len(zipped) == 3 and leftovers(tmp_path) == []
    for entry, masked in zipped:
        data, mask = poses[entry["id"]]
        assert masked.dtype == np.float16 and masked.shape == data.shape and masked.flags.c_contiguous
        assert np.array_equal(np.ma.getmaskarray(masked), np.repeat(mask[..., None], 3, axis=-1))
        assert np.array_equal(masked.filled(0), data)  # unmasked values are exact
        assert (entry["fps"], entry["center"], entry["scale"], entry["split"]) == (25.0, [1.0, 2.0, 3.0], 4.0, None)
    with zipfile.ZipFile(path) as raw:
        assert raw.testzip() is None
        for entry in zipped.entries:
            # np.load of the member read by zipfile equals the member read by offset
            member = np.load(io.BytesIO(raw.read(f"poses/{entry['id']}.npy")), allow_pickle=False)
            assert np.array_equal(np.isnan(member), np.ma.getmaskarray(zipped.read(entry)))
            assert np.array_equal(np.nan_to_num(member), zipped.read(entry["index"]).filled(0))
        assert {i.compress_type for i in raw.infolist() if i.filename.startswith("poses/")} == {zipfile.ZIP_DEFLATED}
        assert np.array_equal(np.load(io.BytesIO(raw.read("index/frames.npy"))), [1, 7, 40])
    if shutil.which("unzip"):
        assert subprocess.run(["unzip", "-tq", str(path)], capture_output=True).returncode == 0


def test_archive_of_shards_is_a_valid_zip_with_its_split(tmp_path):
    rng = np.random.default_rng(1)
    shards = [write_poses(tmp_path / f"s{k}.zip", {f"s{k}/p{i}": ones(int(rng.integers(1, 9))) for i in range(30)})
              for k in range(3)]
    build_archive(shards, tmp_path / "archive.zip", 0.3)
    archive = PoseZip(tmp_path / "archive.zip")
    assert len(archive) == 90 and archive.index["counts"]["val"] == len(archive.split("val")) > 0
    assert {e["split"] for e in archive.entries} == {"train", "val"}
    originals = {e["id"]: (zipped, e) for zipped in map(PoseZip, shards) for e in zipped.entries}
    for entry in archive.entries:
        source, original = originals[entry["id"]]
        assert np.array_equal(archive.read(entry).filled(0), source.read(original).filled(0))
    with zipfile.ZipFile(tmp_path / "archive.zip") as raw:
        assert raw.testzip() is None and len(raw.namelist()) == 90 + len(COLUMNS) + 2


def test_pickled_archive_reopens(small_zip):
    again = pickle.loads(pickle.dumps(PoseZip(small_zip)))
    assert again.read(1).shape == (3, 178, 3)


def test_writer_aborts_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with PoseZipWriter(tmp_path / "p.zip") as writer:
            writer.add("a", *ones(1), {})
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_duplicate_ids_across_shards_fail(tmp_path):
    one = write_poses(tmp_path / "a.zip", {"x": ones(1), "y": ones(1)})
    two = write_poses(tmp_path / "b.zip", {"y": ones(2)})
    message = error_of(lambda: build_archive([one, two], tmp_path / "all.zip"))
    assert message == f"{tmp_path / 'all.zip'}: pose id 'y' occurs twice; ids (relative paths) must be unique"
    assert not (tmp_path / "all.zip").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "damage, detail",
    [
        (lambda raw: raw[: len(raw) // 2], "no zip end record"),
        (lambda raw: raw[:-10], "no zip end record"),
        (lambda raw: b"", "no zip end record"),
        (lambda raw: np.random.default_rng(1).bytes(len(raw)), "no zip end record"),
    ],
    ids=["half", "tail-cut", "empty", "garbage"],
)
def test_corrupt_or_truncated_zip_names_the_file(small_zip, damage, detail):
    small_zip.write_bytes(damage(small_zip.read_bytes()))
    assert error_of(lambda: PoseZip(small_zip)) == (
        f"{small_zip}: corrupt or truncated pose zip ({detail}); delete it and rerun the stage that wrote it"
    )


def test_damaged_index_column_names_the_file(small_zip):
    meta = read_meta(small_zip)
    offset = meta["columns"]["frames"][0] + 128  # first value after the .npy header
    raw = bytearray(small_zip.read_bytes())
    raw[offset] ^= 0xFF
    small_zip.write_bytes(bytes(raw))
    assert error_of(lambda: PoseZip(small_zip)) == (
        f"{small_zip}: corrupt or truncated pose zip (index column 'frames' is damaged (CRC)); "
        "delete it and rerun the stage that wrote it"
    )


def test_missing_file_and_old_or_foreign_format(tmp_path):
    assert error_of(lambda: PoseZip(tmp_path / "absent.zip")) == (
        f"{tmp_path / 'absent.zip'}: no such file; run the stage that writes it first"
    )
    old = tmp_path / "old.zip"
    with zipfile.ZipFile(old, "w") as other:  # what sign-vq wrote before format 2
        other.writestr("poses/a.npy", b"")
        other.writestr("index.json", json.dumps({"format": "sign-vq-posezip/1", "points": 178, "poses": []}))
    expected = (
        f"{old}: not a sign-vq pose zip of format 'sign-vq-posezip/2' (an older sign-vq or another program wrote "
        "it); delete it and rerun the stage that writes it (`sign-vq normalize` for a shard, `sign-vq archive`)"
    )
    assert error_of(lambda: PoseZip(old)) == expected
    assert main(["stats", "--output", str(tmp_path / "stats.json"), str(old)]) == 2
    assert main(["archive", "--output", str(tmp_path / "archive.zip"), str(old)]) == 2


def lie(column: str, value):
    def tamper(rows):
        rows[0][column] = value(rows[0]) if callable(value) else value
    return tamper


@pytest.mark.parametrize(
    "tamper",
    [lie("frames", 10**9), lie("size", 10**9), lie("offset", 10**12), lie("offset", 3)],
    ids=["frames-runaway", "size-beyond-file", "offset-beyond-file", "offset-before-start"],
)
def test_a_lying_index_is_refused_when_opened(tmp_path, tamper):
    path = write_poses(tmp_path / "p.zip", {"a": ones(50), "b": ones(3)}, tamper=tamper)
    assert error_of(lambda: PoseZip(path)) == (
        f"{path}: the index entry of pose 'a' disagrees with the file (member outside the pose data, or more frames "
        f"than its bytes can hold); {FIX}"
    )


@pytest.mark.parametrize(
    "tamper, detail",
    [
        (lie("frames", 51), "float16 array of shape (50, 178, 3), index says 51 frames of float16"),
        (lie("frames", 2), "float16 array of shape (50, 178, 3), index says 2 frames of float16"),
        (lie("offset", lambda row: row["offset"] + 7), "its zip header disagrees with the index"),
        (lie("crc", 12345), "its zip header disagrees with the index"),
    ],
    ids=["more-frames", "fewer-frames", "shifted-offset", "wrong-crc"],
)
def test_a_lying_index_is_a_clear_error_when_read(tmp_path, tamper, detail):
    path = write_poses(tmp_path / "p.zip", {"a": ones(50), "b": ones(3)}, tamper=tamper)
    zipped = PoseZip(path)
    assert error_of(lambda: zipped.read(0)) == f"{path}: pose 'a' is damaged ({detail}); {FIX}"
    assert zipped.read(1).shape == (3, 178, 3)


def test_damaged_member_data_is_a_crc_error_in_read_and_archive(tmp_path, monkeypatch):
    original = zipwriter.encode

    def stored(data, mask):  # deflate's stored blocks: a changed byte changes only the data
        compressed, crc, length = original(data, mask)
        deflate = zlib.compressobj(0, zlib.DEFLATED, -15)
        return deflate.compress(zlib.decompress(compressed, -15)) + deflate.flush(), crc, length

    monkeypatch.setattr(zipwriter, "encode", stored)
    path = write_poses(tmp_path / "shard.zip", {"a": ones(20), "b": ones(3)})
    zipped = PoseZip(path)
    offset, size = int(zipped.columns["offset"][0]), int(zipped.columns["size"][0])
    raw = bytearray(path.read_bytes())
    raw[offset + size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    expected = f"{path}: pose 'a' is damaged (CRC mismatch); {FIX}"
    assert error_of(lambda: PoseZip(path).read(0)) == expected
    assert error_of(lambda: build_archive([path], tmp_path / "archive.zip")) == expected
    assert not (tmp_path / "archive.zip").exists()


def test_a_member_of_the_wrong_type_is_named(tmp_path, monkeypatch):
    def float32_npy(data, mask):
        buffer = io.BytesIO()
        np.save(buffer, np.asfortranarray(np.asarray(data, np.float32)))
        body = buffer.getvalue()
        deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
        return deflate.compress(body) + deflate.flush(), zlib.crc32(body), len(body)

    monkeypatch.setattr(zipwriter, "encode", float32_npy)
    path = write_poses(tmp_path / "p.zip", {"a": ones(4)})
    assert error_of(lambda: PoseZip(path).read(0)) == (
        f"{path}: pose 'a' is damaged (float32 array of shape (4, 178, 3), index says 4 frames of float16); {FIX}"
    )


def open_memory(path: Path) -> int:
    """Bytes allocated (Python and numpy) by opening ``path`` and using its index as training does."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        archive = PoseZip(path)
        train = archive.split("train")
        archive.read(train[len(train) // 2])
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(archive) and len(train)
    return used


def test_index_memory_does_not_grow_per_pose_beyond_compact_arrays(tmp_path):
    sizes = (10_000, 100_000)
    used = {}
    for count in sizes:
        shard = tmp_path / f"s{count}.zip"
        with PoseZipWriter(shard) as writer:
            data, mask = ones(1)
            for i in range(count):
                writer.add(f"lang/video-{i:07d}", data, mask, {})
            writer.close()
        build_archive([shard], tmp_path / f"a{count}.zip", 0.1)
        used[count] = open_memory(tmp_path / f"a{count}.zip")
    with zipfile.ZipFile(tmp_path / "a100000.zip") as raw:  # a central directory built in chunks, zip64 end records
        assert len(raw.infolist()) == 100_000 + len(COLUMNS) + 2
        last = np.load(io.BytesIO(raw.read("poses/lang/video-0099999.npy")))
        assert np.array_equal(last, PoseZip(tmp_path / "a100000.zip").read(99_999).filled(np.nan))
    per_pose = (used[sizes[1]] - used[sizes[0]]) / (sizes[1] - sizes[0])
    assert per_pose <= 100, f"{per_pose:.0f} bytes per pose"


def test_normalize_memory_follows_the_largest_input_and_the_attempt():
    small, large = 1000, 921 * 2**20  # the bucket's largest file
    assert memory_mb([small]) == 501
    assert memory_mb([small, large, None]) == 500 + 2027
    assert memory_mb([large], attempt=2) == 5053  # ceil(2 x 2526.2)


# --- what `sign-vq archive` refuses to copy (issue 21: 6, 9) ---------------------------------------------------------


@pytest.mark.parametrize(
    "tamper, detail",
    [
        (lie("frames", 51), "float16 array of shape (50, 178, 3), index says 51 frames of float16"),
        (lie("offset", lambda row: row["offset"] + 7), "its zip header disagrees with the index"),
        (lie("crc", 12345), "its zip header disagrees with the index"),
    ],
    ids=["frames", "offset", "crc"],
)
def test_a_shard_whose_index_lies_is_refused_by_archive_naming_it_and_the_pose(tmp_path, tamper, detail):
    """Checksum-valid shards whose index disagrees with a member: refused when archived, not copied for later."""
    good = write_poses(tmp_path / "good.zip", {"c": ones(4)})
    forged = write_poses(tmp_path / "forged.zip", {"a": ones(50), "b": ones(3)}, tamper=tamper)
    message = error_of(lambda: build_archive([good, forged], tmp_path / "archive.zip"))
    assert message == f"{forged}: pose 'a' is damaged ({detail}); {FIX}"
    assert not (tmp_path / "archive.zip").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "column, value, expected",
    [("fps", float("nan"), "fps nan (expected a finite frame rate, 0 when unknown)"),
     ("scale", 0.0, "scale 0.0 (expected a finite shoulder width above 0)"),
     ("center", [0.0, float("inf"), 0.0], "center [ 0. inf  0.] (expected finite coordinates)")],
)
def test_unusable_metadata_in_an_index_is_refused_naming_the_file_and_pose(tmp_path, column, value, expected):
    forged = write_poses(tmp_path / "forged.zip", {"a": ones(5), "b": ones(3)}, tamper=lie(column, value))
    message = f"{forged}: the index entry of pose 'a' has {expected}; {FIX}"
    assert error_of(lambda: build_archive([forged], tmp_path / "archive.zip")) == message
    codes = tmp_path / "codes.csv"
    checkpoint = make_checkpoint(tmp_path / "model.ckpt")
    assert main(["encode", "--model", str(checkpoint), "--output", str(codes), str(forged)]) == 2
    assert not codes.exists()


def test_archive_refuses_an_output_that_is_one_of_its_inputs(tmp_path):
    one, two = write_poses(tmp_path / "s0.zip", {"a": ones(2)}), write_poses(tmp_path / "s1.zip", {"b": ones(2)})
    (tmp_path / "link.zip").symlink_to(one)
    before = one.read_bytes()
    for output in (one, tmp_path / "link.zip", tmp_path / "." / "s0.zip"):
        message = error_of(lambda: build_archive([one, two], output))
        assert message == f"--output {output} is also the input shard {one}; write the archive to another file"
        assert main(["archive", "--output", str(output), str(one), str(two)]) == 2
    assert one.read_bytes() == before

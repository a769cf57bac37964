"""The pose zip: the file format of normalize shards and of the training archive (format 2).

One standard zip file (``unzip -l``/``-t`` and :mod:`zipfile` read it; ``np.load`` reads any member):

- ``poses/<id>.npy``, one per pose, written first: a float16 array (frames x 178 x 3) in Fortran order (each
  coordinate's time series is contiguous, which deflates to ~720 bytes a frame on real poses) with NaN where masked,
  deflated on its own so that it is still read with one seek;
- ``index/<column>.npy``: the index as one flat array per column (offset, size, CRC and frames of each member, fps,
  centre, scale, split, the ids packed as UTF-8 bytes ...), stored uncompressed and memory-mapped when read, so an
  open archive holds no Python object per pose and forked DataLoader workers share its pages;
- ``index.json``: the stage's metadata (shard statistics, split counts ...) and where each column lies;
- the zip comment: where ``index.json`` lies, so opening reads neither the central directory nor any pose.

Joining files (:meth:`PoseZipWriter.append_zip`) copies their pose bytes as they are, checked by a CRC of the
whole pose region. Reading a pose checks its local header, size, CRC, dtype and shape against the index, so a lying
index or a damaged member is a :class:`~sign_vq.errors.UserError` naming the file and the pose, never a runaway
allocation.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from sign_vq import skeleton
from sign_vq.errors import UserError
from sign_vq.fileio import atomic_path

FORMAT = "sign-vq-posezip/2"
INDEX = "index.json"
POSE_PREFIX, POSE_SUFFIX = b"poses/", b".npy"
FRAME_BYTES = skeleton.NUM_POINTS * skeleton.DIMS * 2  # float16 bytes of one frame
NPY_HEADER_MAX = 4096  # an .npy header of a pose is 128 bytes; anything past this is not one
DEFLATE_RATIO = 1032  # deflate never expands data by more than this: bounds the frames an index may claim
SPLITS = (None, "train", "val")  # the codes of the `split` column
CHUNK = 4 << 20  # bytes per read/write when joining files
DIRECTORY_CHUNK = 1 << 15  # central directory records built at once

# per-pose columns: dtype and trailing shape
COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "key": ("<u8", ()),  # 64-bit BLAKE2b of the id: duplicate ids and the train/val split
    "offset": ("<u8", ()),  # where the member's compressed bytes start in the file
    "size": ("<u4", ()),  # compressed bytes of the member
    "crc": ("<u4", ()),  # CRC-32 of the member's .npy bytes
    "frames": ("<u4", ()),
    "fps": ("<f8", ()),
    "center": ("<f8", (skeleton.DIMS,)),
    "scale": ("<f8", ()),
    "width": ("<i4", ()),
    "height": ("<i4", ()),
    "outliers": ("<u4", ()),
    "split": ("u1", ()),
    "id_end": ("<u8", ()),  # end of each id in `ids`
}
# what each metadata column must hold: (valid rows of the column, the expectation in words)
VALID = {
    "fps": (lambda v: np.isfinite(v) & (v >= 0), "a finite frame rate, 0 when unknown"),
    "scale": (lambda v: np.isfinite(v) & (v > 0), "a finite shoulder width above 0"),
    "center": (lambda v: np.isfinite(v).all(axis=-1), "finite coordinates"),
    "width": (lambda v: v >= 0, "a frame width of 0 or more"),
    "height": (lambda v: v >= 0, "a frame height of 0 or more"),
}
INFO_DEFAULTS = {"fps": 0.0, "center": (0.0,) * skeleton.DIMS, "scale": 1.0, "width": 0, "height": 0, "outliers": 0}

_LOCAL = struct.Struct("<IHHHHHIIIHH")  # local file header, before the name
_LOCAL_SIG, _CENTRAL_SIG, _END_SIG = 0x04034B50, 0x02014B50, 0x06054B50
_END64_SIG, _LOCATOR_SIG = 0x06064B50, 0x07064B50
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR = struct.Struct("<IIQI")
_UTF8, _DEFLATED, _STORED = 0x0800, 8, 0
_DOS_DATE = 0x21  # 1980-01-01: members carry no time, so equal inputs give equal files
_ZIP64 = 45
_CENTRAL = np.dtype(
    [("sig", "<u4"), ("made", "<u2"), ("needed", "<u2"), ("flags", "<u2"), ("method", "<u2"), ("time", "<u2"),
     ("date", "<u2"), ("crc", "<u4"), ("csize", "<u4"), ("usize", "<u4"), ("name_len", "<u2"), ("extra_len", "<u2"),
     ("comment_len", "<u2"), ("disk", "<u2"), ("internal", "<u2"), ("external", "<u4"), ("offset", "<u4")]
)  # 46 bytes; the name follows, then a zip64 extra field holding the 64-bit local header offset
_EXTRA = np.dtype([("tag", "<u2"), ("len", "<u2"), ("offset", "<u8")])


def id_key(pose_id: str) -> int:
    """The 64-bit BLAKE2b of a pose id (stored per pose: the archive splits and checks ids without Python loops)."""
    return int.from_bytes(hashlib.blake2b(pose_id.encode("utf-8"), digest_size=8).digest(), "big")


@functools.lru_cache(maxsize=4096)
def _npy_header(shape: tuple[int, ...], dtype: str, fortran: bool) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": fortran, "shape": shape})
    return buffer.getvalue()


def encode(data: np.ndarray, mask: np.ndarray) -> tuple[bytes, int, int]:
    """A pose as a deflated `.npy` (float16, Fortran order, NaN where masked): (compressed bytes, CRC, raw length)."""
    values = np.array(data, dtype=np.float16)
    # on the frames x (178*3) view: a same-shape mask is much faster than broadcasting over the last axis of 3
    np.putmask(values.reshape(len(values), -1), np.repeat(mask, values.shape[-1], axis=1), np.float16(np.nan))
    header = _npy_header(values.shape, "<f2", True)
    body = values.tobytes(order="F")
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
    compressed = deflate.compress(header) + deflate.compress(body) + deflate.flush()
    return compressed, zlib.crc32(body, zlib.crc32(header)), len(header) + len(body)


def _npy(raw: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and header length of `.npy` bytes (ValueError if they are not one)."""
    stream = io.BytesIO(raw)
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(stream)
    return shape, fortran, dtype, stream.tell()


def _fail(path: Path, pose_id: str, what: str) -> UserError:
    return UserError(f"{path}: pose {pose_id!r} is damaged ({what}); delete the file and rerun the stage that wrote it")


def _positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions ``start .. start+length-1`` of every run, concatenated."""
    run_starts = np.cumsum(lengths) - lengths
    return np.repeat(starts - run_starts, lengths) + np.arange(int(lengths.sum()))


def _central_directory(fixed: np.ndarray, names: np.ndarray, name_end: np.ndarray, offsets: np.ndarray,
                       prefix: bytes, suffix: bytes) -> bytes:
    """Central directory records (``fixed`` without names) named ``prefix + name + suffix``, built without a loop
    per member."""
    name_len = np.diff(name_end, prepend=0).astype(np.int64)
    fixed["name_len"] = name_len + len(prefix) + len(suffix)
    head = np.frombuffer(fixed.tobytes() if len(fixed) else b"", np.uint8).reshape(-1, _CENTRAL.itemsize)
    head = np.hstack([head, np.tile(np.frombuffer(prefix, np.uint8), (len(fixed), 1))])
    extra = np.zeros(len(fixed), _EXTRA)
    extra["tag"], extra["len"], extra["offset"] = 1, 8, offsets
    tail = np.hstack([np.tile(np.frombuffer(suffix, np.uint8), (len(fixed), 1)),
                      np.frombuffer(extra.tobytes(), np.uint8).reshape(-1, _EXTRA.itemsize)])
    record = head.shape[1] + name_len + tail.shape[1]
    start = np.cumsum(record) - record
    out = np.empty(int(record.sum()), np.uint8)
    out[(start[:, None] + np.arange(head.shape[1])).ravel()] = head.ravel()
    out[_positions(start + head.shape[1], name_len)] = names
    out[(start[:, None] + head.shape[1] + name_len[:, None] + np.arange(tail.shape[1])).ravel()] = tail.ravel()
    return out.tobytes()


class _Table:
    """Columns that grow by rows (:meth:`add`) or by blocks of arrays (:meth:`extend`)."""

    def __init__(self):
        self.blocks: list[dict[str, np.ndarray]] = []
        self.rows: list[dict] = []
        self.ids: list[np.ndarray] = []
        self.id_bytes = 0
        self.count = 0

    def add(self, pose_id: bytes, row: dict) -> None:
        self.id_bytes += len(pose_id)
        self.rows.append({**row, "id_end": self.id_bytes})
        self.ids.append(np.frombuffer(pose_id, np.uint8))
        self.count += 1

    def _flush(self) -> None:
        if self.rows:
            rows = self.rows
            self.blocks.append({name: np.array([r[name] for r in rows], dtype) for name, (dtype, _) in COLUMNS.items()})
            self.rows = []

    def extend(self, block: dict[str, np.ndarray], ids: np.ndarray) -> None:
        self._flush()
        self.blocks.append({**block, "id_end": block["id_end"] + self.id_bytes})
        self.ids.append(ids)
        self.id_bytes += len(ids)
        self.count += len(block["id_end"])

    def columns(self) -> dict[str, np.ndarray]:
        self._flush()
        return {
            name: np.concatenate([b[name] for b in self.blocks]) if self.blocks else np.zeros((0, *shape), dtype)
            for name, (dtype, shape) in COLUMNS.items()
        } | {"ids": np.concatenate(self.ids) if self.ids else np.zeros(0, np.uint8)}


class PoseZipWriter:
    """Write a pose zip atomically: nothing appears at ``path`` unless :meth:`close` succeeds."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._atomic = atomic_path(self.path)
        self._file: BinaryIO | None = open(self._atomic.__enter__(), "wb")
        self._table = _Table()
        self._position = 0
        self._crc = 0  # of everything written so far: before close, the pose region

    def __len__(self) -> int:
        return self._table.count

    def _write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self._position += len(data)
        self._crc = zlib.crc32(data, self._crc)

    def _member(self, name: bytes, payload: bytes, crc: int, raw_length: int, method: int) -> int:
        """Write one member (local header, name, payload); returns where its payload starts."""
        if max(len(payload), raw_length) >= 0xFFFFFFFF:
            raise UserError(f"{self.path}: member {name.decode()!r} is larger than 4 GiB; split the pose file")
        header = _LOCAL.pack(_LOCAL_SIG, 20, _UTF8, method, 0, _DOS_DATE, crc, len(payload), raw_length, len(name), 0)
        self._write(header)
        self._write(name)
        start = self._position
        self._write(payload)
        return start

    def add(self, pose_id: str, data: np.ndarray, mask: np.ndarray, info: Mapping) -> None:
        """Add one pose (``data`` frames x 178 x 3, ``mask`` frames x 178) with its metadata (`fps`, `center`,
        `scale`, `width`, `height`, `outliers`; others are ignored)."""
        encoded = pose_id.encode("utf-8")
        compressed, crc, raw_length = encode(data, mask)
        offset = self._member(POSE_PREFIX + encoded + POSE_SUFFIX, compressed, crc, raw_length, _DEFLATED)
        row = {name: info.get(name, default) for name, default in INFO_DEFAULTS.items()}
        row.update(key=id_key(pose_id), offset=offset, size=len(compressed), crc=crc, frames=len(data), split=0)
        self._table.add(encoded, row)

    def append_zip(self, source: "PoseZip", split: np.ndarray | None = None) -> None:
        """Append every pose of ``source`` as its bytes stand (one sequential copy, checked by the CRC of its pose
        region); ``split`` replaces its split codes."""
        base, source_crc, remaining = self._position, 0, source.data_end
        buffer = memoryview(bytearray(CHUNK))
        with open(source.path, "rb", buffering=0) as handle:
            while remaining:
                read = handle.readinto(buffer[: min(CHUNK, remaining)])
                if not read:
                    raise UserError(f"{source.path}: truncated; delete it and rerun the stage that wrote it")
                chunk = buffer[:read]
                source_crc = zlib.crc32(chunk, source_crc)
                self._write(chunk)
                remaining -= read
        if source_crc != source.index["data_crc"]:
            source.find_damage()
        columns = {name: np.asarray(source.columns[name]) for name in COLUMNS}
        columns["offset"] = columns["offset"] + np.uint64(base)
        if split is not None:
            columns["split"] = split.astype(np.uint8)
        self._table.extend(columns, np.asarray(source.columns["ids"]))

    def _check_unique(self, columns: dict[str, np.ndarray]) -> None:
        _, first, counts = np.unique(columns["key"], return_index=True, return_counts=True)
        for index in first[counts > 1]:
            same = np.flatnonzero(columns["key"] == columns["key"][index])
            names = {_id_at(columns["ids"], columns["id_end"], int(i)) for i in same}
            if len(names) < len(same):
                duplicate = _id_at(columns["ids"], columns["id_end"], int(index))
                raise UserError(f"{self.path}: pose id {duplicate!r} occurs twice; ids (relative paths) must be unique")

    def close(self, **index) -> None:
        """Write the index (columns, then ``index.json`` with the given keys) and move the file into place."""
        columns = self._table.columns()
        self._check_unique(columns)
        data_end, data_crc = self._position, self._crc
        stored: list[tuple[bytes, int, int, int]] = []  # name, payload offset, length, crc
        located = {
            name: self._store(
                f"index/{name}.npy".encode(), _npy_header(array.shape, array.dtype.str, False) + array.tobytes(), stored
            )
            for name, array in columns.items()
        }
        meta = {"format": FORMAT, "points": skeleton.NUM_POINTS, "count": len(columns["key"]), "data_end": data_end,
                "data_crc": data_crc, "columns": located, **index}
        locator = {"format": FORMAT, "index": self._store(INDEX.encode(), json.dumps(meta).encode(), stored)}
        self._finish(columns, stored, json.dumps(locator).encode())
        self._file.close()
        self._file = None
        self._atomic.__exit__(None, None, None)

    def _store(self, name: bytes, payload: bytes, stored: list) -> list[int]:
        """Write an uncompressed member; returns where it lies (payload offset, length, CRC)."""
        crc = zlib.crc32(payload)
        offset = self._member(name, payload, crc, len(payload), _STORED)
        stored.append((name, offset, len(payload), crc))
        return [offset, len(payload), crc]

    def _finish(self, columns: dict[str, np.ndarray], stored: list, comment: bytes) -> None:
        """The central directory (poses, then index members) and the zip64 and classic end records."""
        directory_start = self._position
        ids, id_end = columns["ids"], columns["id_end"]
        for first in range(0, len(id_end), DIRECTORY_CHUNK):  # in chunks: memory stays flat however many poses
            part = slice(first, first + DIRECTORY_CHUNK)
            begin, ends = int(id_end[first - 1]) if first else 0, id_end[part].astype(np.int64)
            frames = columns["frames"][part].astype(np.int64)
            name_len = np.diff(ends, prepend=begin) + len(POSE_PREFIX) + len(POSE_SUFFIX)
            fixed = self._fixed(_DEFLATED, columns["crc"][part], columns["size"][part],
                                FRAME_BYTES * frames + self._pose_header_length(frames))
            self._write(_central_directory(fixed, ids[begin : int(ends[-1])], ends - begin,
                                           columns["offset"][part].astype(np.int64) - _LOCAL.size - name_len,
                                           POSE_PREFIX, POSE_SUFFIX))
        names = [name for name, *_ in stored]
        lengths = np.array([length for *_, length, _ in stored])
        index = self._fixed(_STORED, np.array([crc for *_, crc in stored]), lengths, lengths)
        self._write(_central_directory(
            index, np.frombuffer(b"".join(names), np.uint8), np.cumsum([len(n) for n in names]),
            np.array([offset for _, offset, *_ in stored]) - _LOCAL.size - np.array([len(n) for n in names]), b"", b""))
        count, size = len(id_end) + len(stored), self._position - directory_start
        end64 = self._position
        self._write(
            _END64.pack(_END64_SIG, _END64.size - 12, _ZIP64, _ZIP64, 0, 0, count, count, size, directory_start)
        )
        self._write(_LOCATOR.pack(_LOCATOR_SIG, 0, end64, 1))
        self._write(_END.pack(_END_SIG, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF), min(size, 0xFFFFFFFF),
                              min(directory_start, 0xFFFFFFFF), len(comment)) + comment)

    @staticmethod
    def _pose_header_length(frames: np.ndarray) -> np.ndarray:
        """The .npy header length of each pose (the same for every realistic frame count; computed per distinct)."""
        distinct, inverse = np.unique(frames, return_inverse=True)
        shapes = [(int(f), skeleton.NUM_POINTS, skeleton.DIMS) for f in distinct]
        lengths = np.array([len(_npy_header(shape, "<f2", True)) for shape in shapes])
        return lengths[inverse].reshape(frames.shape)

    @staticmethod
    def _fixed(method: int, crc: np.ndarray, csize: np.ndarray, usize: np.ndarray) -> np.ndarray:
        fixed = np.zeros(len(crc), _CENTRAL)
        fixed["sig"], fixed["made"], fixed["needed"], fixed["flags"] = _CENTRAL_SIG, (3 << 8) | _ZIP64, _ZIP64, _UTF8
        fixed["method"], fixed["date"], fixed["crc"] = method, _DOS_DATE, crc
        fixed["csize"], fixed["usize"] = csize, usize
        fixed["extra_len"], fixed["external"], fixed["offset"] = _EXTRA.itemsize, 0o100644 << 16, 0xFFFFFFFF
        return fixed

    def abort(self) -> None:
        """Discard everything written so far (idempotent)."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> "PoseZipWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def _id_at(ids: np.ndarray, id_end: np.ndarray, index: int) -> str:
    start = int(id_end[index - 1]) if index else 0
    return bytes(ids[start : int(id_end[index])]).decode("utf-8", "replace")


def _corrupt(path: Path, what: str) -> UserError:
    return UserError(f"{path}: corrupt or truncated pose zip ({what}); delete it and rerun the stage that wrote it")


def _read_exactly(handle: BinaryIO, path: Path, offset: int, length: int, crc: int, what: str) -> bytes:
    handle.seek(offset)
    data = handle.read(length)
    if len(data) != length or zlib.crc32(data) != crc:
        raise _corrupt(path, f"{what} is {'cut short' if len(data) != length else 'damaged (CRC)'}")
    return data


def read_meta(path: str | os.PathLike) -> dict:
    """The metadata (``index.json``) of a pose zip, read through the locator in its zip comment: cheap at any size
    (``sign-vq stats`` reads only this)."""
    path = Path(path)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; run the stage that writes it first") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from None
    with handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(size - _END.size - 0xFFFF, 0))
        tail = handle.read()
        end = tail.rfind(struct.pack("<I", _END_SIG))
        if end < 0 or end + _END.size + _END.unpack_from(tail, end)[-1] != len(tail):
            raise _corrupt(path, "no zip end record")
        comment = tail[end + _END.size :]
        try:
            locator = json.loads(comment)
            offset, length, crc = (int(v) for v in locator["index"])
            assert locator["format"] == FORMAT
        except (ValueError, TypeError, KeyError, AssertionError):
            raise UserError(
                f"{path}: not a sign-vq pose zip of format {FORMAT!r} (an older sign-vq or another program wrote it); "
                "delete it and rerun the stage that writes it (`sign-vq normalize` for a shard, `sign-vq archive`)"
            ) from None
        try:
            meta = json.loads(_read_exactly(handle, path, offset, length, crc, INDEX))
        except (ValueError, OverflowError) as error:
            raise _corrupt(path, f"{INDEX}: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("points") != skeleton.NUM_POINTS:
        raise _corrupt(path, f"{INDEX} is not a sign-vq index of {skeleton.NUM_POINTS} points")
    if not all(isinstance(meta.get(key), int) for key in ("count", "data_end", "data_crc")):
        raise _corrupt(path, f"{INDEX} lacks its counts and checksums")
    if not 0 <= meta["data_end"] <= size:
        raise _corrupt(path, f"{INDEX} claims poses beyond the end of the file")
    return meta


def _map_column(path: Path, handle: BinaryIO, name: str, where: list, count: int) -> np.ndarray:
    """Memory-map one index column after checking its CRC, dtype and shape."""
    dtype, shape = COLUMNS.get(name, ("u1", ()))
    try:
        offset, length, crc = (int(v) for v in where)
        handle.seek(offset)
        header = handle.read(min(length, NPY_HEADER_MAX))
        found_shape, fortran, found_dtype, header_length = _npy(header)
        expected = (count, *shape) if name != "ids" else found_shape
        if found_dtype != np.dtype(dtype) or fortran or tuple(found_shape) != expected \
                or len(found_shape) != 1 + len(shape):
            raise ValueError(f"dtype {found_dtype} shape {found_shape}, expected {dtype} {expected}")
        if header_length + found_dtype.itemsize * int(np.prod(found_shape)) != length:
            raise ValueError("its length disagrees with its shape")
        column = np.memmap(path, found_dtype, "r", offset + header_length, found_shape) if length > header_length \
            else np.zeros(found_shape, found_dtype)
    except (ValueError, TypeError, OSError) as error:
        raise _corrupt(path, f"index column {name!r}: {error}") from None
    if zlib.crc32(column, zlib.crc32(header[:header_length])) != crc:
        raise _corrupt(path, f"index column {name!r} is damaged (CRC)")
    return column


class Entries(Sequence):
    """Index entries (of the poses at ``positions``) as dicts, each made when accessed: a selection of poses holds
    one integer array, not a Python object per pose."""

    def __init__(self, archive: "PoseZip", positions: np.ndarray | range):
        self.archive, self.positions = archive, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int | slice) -> "dict | Entries":
        if isinstance(index, slice):
            return Entries(self.archive, self.positions[index])
        return self.archive.entry(int(self.positions[index]))


class PoseZip:
    """Read a pose zip: opening maps its index columns (no Python object per pose); poses are read one member at a
    time, with one positioned read each. Safe with DataLoader workers: each process opens its own file handle."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.index = read_meta(self.path)
        self._handle: BinaryIO | None = None
        self._pid = -1
        count = self.index["count"]
        try:
            with open(self.path, "rb") as handle:
                self.columns = {name: _map_column(self.path, handle, name, where, count)
                                for name, where in self.index["columns"].items()}
        except (TypeError, AttributeError):
            raise _corrupt(self.path, f"{INDEX} has no valid column table") from None
        if set(self.columns) != {*COLUMNS, "ids"}:
            raise _corrupt(self.path, f"index columns {sorted(self.columns)}, expected {sorted({*COLUMNS, 'ids'})}")
        self._check_index()
        self.entries = Entries(self, range(len(self)))

    @property
    def data_end(self) -> int:
        return int(self.index["data_end"])

    def _check_index(self) -> None:
        """Every pose's member lies inside the pose region, its frames fit its size, ids and splits are sane."""
        c = self.columns
        id_end = c["id_end"]
        id_length = np.diff(id_end.astype(np.int64), prepend=0)
        name_length = id_length + len(POSE_PREFIX) + len(POSE_SUFFIX)
        offset, size = c["offset"].astype(np.int64), c["size"].astype(np.int64)
        bad = (
            (id_length <= 0)
            | (offset - _LOCAL.size - name_length < 0)
            | (offset + size > self.data_end)
            | (c["frames"].astype(np.int64) * FRAME_BYTES > size * DEFLATE_RATIO)
            | (c["split"] >= len(SPLITS))
        )
        if len(id_end) and int(id_end[-1]) != len(c["ids"]):
            raise _corrupt(self.path, "the packed ids do not match their ends")
        if bad.any():
            first = int(np.argmax(bad))
            pose = self.pose_id(first) if id_length[first] > 0 else f"#{first}"
            raise UserError(
                f"{self.path}: the index entry of pose {pose!r} disagrees with the file (member outside the pose "
                "data, or more frames than its bytes can hold); delete the file and rerun the stage that wrote it"
            )
        self._check_values()

    def _check_values(self) -> None:
        """Every pose's metadata (fps, scale, centre, frame size) is a usable number (see :data:`VALID`)."""
        for name, (valid, expected) in VALID.items():
            bad = ~valid(np.asarray(self.columns[name]))
            if bad.any():
                first = int(np.argmax(bad))
                raise UserError(
                    f"{self.path}: the index entry of pose {self.pose_id(first)!r} has {name} "
                    f"{self.columns[name][first]} (expected {expected}); delete the file and rerun the stage that wrote it"
                )

    def __len__(self) -> int:
        return int(self.index["count"])

    def pose_id(self, index: int) -> str:
        return _id_at(self.columns["ids"], self.columns["id_end"], index)

    def entry(self, index: int) -> dict:
        """The metadata of pose ``index`` as a dict (``index``, ``id``, ``frames``, ``fps``, ``center`` ...)."""
        c = self.columns
        return {
            "index": index,
            "id": self.pose_id(index),
            "frames": int(c["frames"][index]),
            "fps": float(c["fps"][index]),
            "center": [float(v) for v in c["center"][index]],
            "scale": float(c["scale"][index]),
            "width": int(c["width"][index]),
            "height": int(c["height"][index]),
            "outliers": int(c["outliers"][index]),
            "split": SPLITS[int(c["split"][index])],
        }

    def split(self, name: str) -> Entries:
        """The entries of the poses of split ``name`` (`train` or `val`), in file order."""
        return Entries(self, np.flatnonzero(np.asarray(self.columns["split"]) == SPLITS.index(name)))

    @property
    def frames(self) -> np.ndarray:
        return self.columns["frames"]

    def _file(self) -> BinaryIO:
        if self._handle is None or self._pid != os.getpid():
            self._handle = open(self.path, "rb", buffering=0)
            self._pid = os.getpid()
        return self._handle

    def read(self, key: int | Mapping) -> np.ma.MaskedArray:
        """Pose ``key`` (a position or an entry) as a float16 masked array (frames x 178 x 3); one positioned read.
        A member that disagrees with the index or is damaged is a :class:`UserError` naming the file and pose."""
        index = int(key["index"]) if isinstance(key, Mapping) else int(key)
        frames = int(self.columns["frames"][index])
        data = self._inflated(index)
        shape = (frames, skeleton.NUM_POINTS, skeleton.DIMS)
        values = np.ndarray(shape, np.float16, data, len(data) - FRAME_BYTES * frames, order="F").copy(order="C")
        return np.ma.MaskedArray(values, mask=~np.isfinite(values), copy=False)  # no mask copy, unlike masked_invalid

    def _inflated(self, index: int) -> bytes:
        """The `.npy` bytes of pose ``index`` (one positioned read), checked against its index entry."""
        c = self.columns
        offset, size = int(c["offset"][index]), int(c["size"][index])
        crc, frames, pose = int(c["crc"][index]), int(c["frames"][index]), self.pose_id(index)
        name = POSE_PREFIX + pose.encode() + POSE_SUFFIX
        start = offset - _LOCAL.size - len(name)
        try:
            raw = os.pread(self._file().fileno(), offset + size - start, start)
        except OSError as error:
            raise _fail(self.path, pose, f"cannot read: {error.strerror}") from None
        return self._checked(raw, name, crc, size, frames, pose)

    def _checked(self, raw: bytes, name: bytes, crc: int, size: int, frames: int, pose: str) -> bytes:
        """The inflated member ``raw`` (local header, name, deflated .npy) if its zip header, name, size, array header
        (``frames`` of float16) and CRC agree with the index; else a UserError naming the file and pose."""
        if len(raw) != _LOCAL.size + len(name) + size:
            raise _fail(self.path, pose, "the file is cut short")
        sig, _, _, method, _, _, found_crc, found_size, _, name_len, extra = _LOCAL.unpack_from(raw)
        fields = (sig, method, found_crc, found_size, name_len, extra)
        if fields != (_LOCAL_SIG, _DEFLATED, crc, size, len(name), 0) or raw[_LOCAL.size : _LOCAL.size + len(name)] != name:
            raise _fail(self.path, pose, "its zip header disagrees with the index")
        shape = (frames, skeleton.NUM_POINTS, skeleton.DIMS)
        header = _npy_header(shape, "<f2", True)  # what the writer wrote: comparing bytes is 100x faster than parsing
        try:
            inflate = zlib.decompressobj(-15)
            data = inflate.decompress(memoryview(raw)[_LOCAL.size + len(name) :], NPY_HEADER_MAX + FRAME_BYTES * frames)
            if not data.startswith(header):
                found_shape, fortran, dtype, _ = _npy(data[:NPY_HEADER_MAX])
                order = "" if fortran else "C-order "
                found = f"{order}{dtype} array of shape {found_shape}"
                raise _fail(self.path, pose, f"{found}, index says {frames} frames of float16")
        except (zlib.error, ValueError) as error:
            raise _fail(self.path, pose, f"not a deflated .npy: {error}") from None
        if len(data) != len(header) + FRAME_BYTES * frames or zlib.crc32(data) != crc:
            raise _fail(self.path, pose, "CRC mismatch")
        return data

    def verify(self) -> None:
        """Inflate every pose and check it against its index entry (zip header, name, size, frames, CRC): a damaged or
        forged file is a UserError naming it and the pose (`sign-vq archive` checks each shard so)."""
        for index in range(len(self)):
            self._inflated(index)

    def find_damage(self) -> None:
        """Raise the error of the first damaged pose (or of the pose region as a whole when no pose is)."""
        self.verify()
        raise _corrupt(self.path, "the pose data's checksum disagrees although every pose reads")

    def __iter__(self) -> Iterator[tuple[dict, np.ma.MaskedArray]]:
        for index in range(len(self)):
            yield self.entry(index), self.read(index)

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

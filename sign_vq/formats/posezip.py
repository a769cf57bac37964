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

import io
import json
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from sign_vq.errors import UserError
from sign_vq.formats.ziplayout import (
    COLUMNS,
    DEFLATE_RATIO,
    DEFLATED,
    END,
    END_SIG,
    FORMAT,
    FRAME_BYTES,
    INDEX,
    LOCAL,
    LOCAL_SIG,
    NPY_HEADER_MAX,
    POSE_PREFIX,
    POSE_SUFFIX,
    SPLITS,
    VALID,
    id_at,
    npy_header,
)
from sign_vq.poses import skeleton


def _npy(raw: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and header length of `.npy` bytes (ValueError if they are not one)."""
    stream = io.BytesIO(raw)
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(stream)
    return shape, fortran, dtype, stream.tell()


def _fail(path: Path, pose_id: str, what: str) -> UserError:
    return UserError(f"{path}: pose {pose_id!r} is damaged ({what}); delete the file and rerun the stage that wrote it")


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
        handle.seek(max(size - END.size - 0xFFFF, 0))
        tail = handle.read()
        end = tail.rfind(struct.pack("<I", END_SIG))
        if end < 0 or end + END.size + END.unpack_from(tail, end)[-1] != len(tail):
            raise _corrupt(path, "no zip end record")
        comment = tail[end + END.size :]
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
            | (offset - LOCAL.size - name_length < 0)
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
        return id_at(self.columns["ids"], self.columns["id_end"], index)

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
        start = offset - LOCAL.size - len(name)
        try:
            raw = os.pread(self._file().fileno(), offset + size - start, start)
        except OSError as error:
            raise _fail(self.path, pose, f"cannot read: {error.strerror}") from None
        return self._checked(raw, name, crc, size, frames, pose)

    def _checked(self, raw: bytes, name: bytes, crc: int, size: int, frames: int, pose: str) -> bytes:
        """The inflated member ``raw`` (local header, name, deflated .npy) if its zip header, name, size, array header
        (``frames`` of float16) and CRC agree with the index; else a UserError naming the file and pose."""
        if len(raw) != LOCAL.size + len(name) + size:
            raise _fail(self.path, pose, "the file is cut short")
        sig, _, _, method, _, _, found_crc, found_size, _, name_len, extra = LOCAL.unpack_from(raw)
        fields = (sig, method, found_crc, found_size, name_len, extra)
        if fields != (LOCAL_SIG, DEFLATED, crc, size, len(name), 0) or raw[LOCAL.size : LOCAL.size + len(name)] != name:
            raise _fail(self.path, pose, "its zip header disagrees with the index")
        shape = (frames, skeleton.NUM_POINTS, skeleton.DIMS)
        header = npy_header(shape, "<f2", True)  # what the writer wrote: comparing bytes is 100x faster than parsing
        try:
            inflate = zlib.decompressobj(-15)
            data = inflate.decompress(memoryview(raw)[LOCAL.size + len(name) :], NPY_HEADER_MAX + FRAME_BYTES * frames)
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

"""Writing pose zips: poses added one by one (normalize) or whole zips appended (archive), the index written last
and the file renamed into place only when complete."""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sign_vq.errors import UserError
from sign_vq.fileio import atomic_path
from sign_vq.formats.posezip import PoseZip
from sign_vq.formats.ziplayout import (
    CENTRAL,
    CENTRAL_SIG,
    COLUMNS,
    DEFLATED,
    DOS_DATE,
    END,
    END64,
    END64_SIG,
    END_SIG,
    EXTRA,
    FORMAT,
    FRAME_BYTES,
    INDEX,
    INFO_DEFAULTS,
    LOCAL,
    LOCAL_SIG,
    LOCATOR,
    LOCATOR_SIG,
    POSE_PREFIX,
    POSE_SUFFIX,
    STORED,
    UTF8,
    ZIP64,
    id_at,
    id_key,
    npy_header,
)
from sign_vq.poses import skeleton

CHUNK = 4 << 20  # bytes per read/write when joining files
DIRECTORY_CHUNK = 1 << 15  # central directory records built at once


def encode(data: np.ndarray, mask: np.ndarray) -> tuple[bytes, int, int]:
    """A pose as a deflated `.npy` (float16, Fortran order, NaN where masked): (compressed bytes, CRC, raw length)."""
    values = np.array(data, dtype=np.float16)
    # on the frames x (178*3) view: a same-shape mask is much faster than broadcasting over the last axis of 3
    np.putmask(values.reshape(len(values), -1), np.repeat(mask, values.shape[-1], axis=1), np.float16(np.nan))
    header = npy_header(values.shape, "<f2", True)
    body = values.tobytes(order="F")
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
    compressed = deflate.compress(header) + deflate.compress(body) + deflate.flush()
    return compressed, zlib.crc32(body, zlib.crc32(header)), len(header) + len(body)


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
    head = np.frombuffer(fixed.tobytes() if len(fixed) else b"", np.uint8).reshape(-1, CENTRAL.itemsize)
    head = np.hstack([head, np.tile(np.frombuffer(prefix, np.uint8), (len(fixed), 1))])
    extra = np.zeros(len(fixed), EXTRA)
    extra["tag"], extra["len"], extra["offset"] = 1, 8, offsets
    tail = np.hstack([np.tile(np.frombuffer(suffix, np.uint8), (len(fixed), 1)),
                      np.frombuffer(extra.tobytes(), np.uint8).reshape(-1, EXTRA.itemsize)])
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
        header = LOCAL.pack(LOCAL_SIG, 20, UTF8, method, 0, DOS_DATE, crc, len(payload), raw_length, len(name), 0)
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
        offset = self._member(POSE_PREFIX + encoded + POSE_SUFFIX, compressed, crc, raw_length, DEFLATED)
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
            names = {id_at(columns["ids"], columns["id_end"], int(i)) for i in same}
            if len(names) < len(same):
                duplicate = id_at(columns["ids"], columns["id_end"], int(index))
                raise UserError(f"{self.path}: pose id {duplicate!r} occurs twice; ids (relative paths) must be unique")

    def close(self, **index) -> None:
        """Write the index (columns, then ``index.json`` with the given keys) and move the file into place."""
        columns = self._table.columns()
        self._check_unique(columns)
        data_end, data_crc = self._position, self._crc
        stored: list[tuple[bytes, int, int, int]] = []  # name, payload offset, length, crc
        located = {
            name: self._store(
                f"index/{name}.npy".encode(), npy_header(array.shape, array.dtype.str, False) + array.tobytes(), stored
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
        offset = self._member(name, payload, crc, len(payload), STORED)
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
            fixed = self._fixed(DEFLATED, columns["crc"][part], columns["size"][part],
                                FRAME_BYTES * frames + self._pose_header_length(frames))
            self._write(_central_directory(fixed, ids[begin : int(ends[-1])], ends - begin,
                                           columns["offset"][part].astype(np.int64) - LOCAL.size - name_len,
                                           POSE_PREFIX, POSE_SUFFIX))
        names = [name for name, *_ in stored]
        lengths = np.array([length for *_, length, _ in stored])
        index = self._fixed(STORED, np.array([crc for *_, crc in stored]), lengths, lengths)
        self._write(_central_directory(
            index, np.frombuffer(b"".join(names), np.uint8), np.cumsum([len(n) for n in names]),
            np.array([offset for _, offset, *_ in stored]) - LOCAL.size - np.array([len(n) for n in names]), b"", b""))
        count, size = len(id_end) + len(stored), self._position - directory_start
        end64 = self._position
        self._write(
            END64.pack(END64_SIG, END64.size - 12, ZIP64, ZIP64, 0, 0, count, count, size, directory_start)
        )
        self._write(LOCATOR.pack(LOCATOR_SIG, 0, end64, 1))
        self._write(END.pack(END_SIG, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF), min(size, 0xFFFFFFFF),
                              min(directory_start, 0xFFFFFFFF), len(comment)) + comment)

    @staticmethod
    def _pose_header_length(frames: np.ndarray) -> np.ndarray:
        """The .npy header length of each pose (the same for every realistic frame count; computed per distinct)."""
        distinct, inverse = np.unique(frames, return_inverse=True)
        shapes = [(int(f), skeleton.NUM_POINTS, skeleton.DIMS) for f in distinct]
        lengths = np.array([len(npy_header(shape, "<f2", True)) for shape in shapes])
        return lengths[inverse].reshape(frames.shape)

    @staticmethod
    def _fixed(method: int, crc: np.ndarray, csize: np.ndarray, usize: np.ndarray) -> np.ndarray:
        fixed = np.zeros(len(crc), CENTRAL)
        fixed["sig"], fixed["made"], fixed["needed"], fixed["flags"] = CENTRAL_SIG, (3 << 8) | ZIP64, ZIP64, UTF8
        fixed["method"], fixed["date"], fixed["crc"] = method, DOS_DATE, crc
        fixed["csize"], fixed["usize"] = csize, usize
        fixed["extra_len"], fixed["external"], fixed["offset"] = EXTRA.itemsize, 0o100644 << 16, 0xFFFFFFFF
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

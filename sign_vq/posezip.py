"""The pose zip: the file format of normalize shards and of the training archive.

A ZIP_STORED zip with one member ``poses/<id>.npy`` per pose: a float16 array (frames x 178 x 3) whose masked
entries are NaN (``np.ma.masked_invalid`` gives the masked array back), and an ``index.json`` member written last
(``poses``: id, member and metadata of each pose, plus stage-specific keys). Members are stored uncompressed, so a
pose is read with one seek, and files can be joined by streaming members without decoding them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from sign_vq import skeleton
from sign_vq.errors import UserError
from sign_vq.fileio import atomic_path

FORMAT = "sign-vq-posezip/1"
INDEX = "index.json"


def member_name(pose_id: str) -> str:
    return f"poses/{pose_id}.npy"


def encode(data: np.ndarray, mask: np.ndarray) -> bytes:
    """A pose as `.npy` bytes: float16 values, NaN where masked."""
    values = np.array(data, dtype=np.float16)
    # on the frames x (178*3) view: a same-shape mask is much faster than broadcasting over the last axis of 3
    np.putmask(values.reshape(len(values), -1), np.repeat(mask, values.shape[-1], axis=1), np.float16(np.nan))
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    return buffer.getvalue()


def decode(raw: bytes) -> np.ma.MaskedArray:
    """`.npy` bytes of :func:`encode` as a float16 masked array (frames x 178 x 3)."""
    return np.ma.masked_invalid(np.load(io.BytesIO(raw), allow_pickle=False), copy=False)


class PoseZipWriter:
    """Write a pose zip atomically: nothing appears at ``path`` unless :meth:`close` succeeds."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self.entries: list[dict] = []
        self._ids: set[str] = set()

    def _claim(self, pose_id: str) -> str:
        if pose_id in self._ids:
            raise UserError(f"{self.path}: pose id {pose_id!r} occurs twice; ids (relative paths) must be unique")
        self._ids.add(pose_id)
        return member_name(pose_id)

    def add(self, pose_id: str, data: np.ndarray, mask: np.ndarray, info: dict) -> None:
        """Add one pose (``data`` frames x 178 x 3, ``mask`` frames x 178) with its metadata."""
        member = self._claim(pose_id)
        self._zip.writestr(member, encode(data, mask))
        self.entries.append({"id": pose_id, "member": member, **info})

    def copy_from(self, source: "PoseZip", entry: dict, **extra) -> None:
        """Stream one pose member of ``source`` into this zip unchanged (memory stays flat)."""
        member = self._claim(entry["id"])
        with source.zip.open(entry["member"]) as src, self._zip.open(member, "w", force_zip64=True) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        self.entries.append({**entry, "member": member, **extra})

    def close(self, **index) -> None:
        """Write the index (``poses`` plus the given keys) and move the file into place."""
        payload = {"format": FORMAT, "points": skeleton.NUM_POINTS, "poses": self.entries, **index}
        self._zip.writestr(INDEX, json.dumps(payload))
        self._zip.close()
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        """Discard everything written so far (idempotent)."""
        if self._zip.fp is None:
            return
        self._zip.close()
        self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> "PoseZipWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


class PoseZip:
    """Read a pose zip; opening is cheap (the index only), poses are read one member at a time.

    Safe with DataLoader workers: the zip handle is reopened in each process that reads.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1
        try:
            index = json.loads(self.zip.read(INDEX))
        except FileNotFoundError:
            raise UserError(f"{self.path}: no such file; run the stage that writes it first") from None
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError, EOFError) as error:
            raise UserError(
                f"{self.path}: corrupt or truncated pose zip ({type(error).__name__}: {error}); "
                "delete it and rerun the stage that wrote it"
            ) from None
        if index.get("format") != FORMAT or index.get("points") != skeleton.NUM_POINTS:
            raise UserError(
                f"{self.path}: not a sign-vq pose zip of {skeleton.NUM_POINTS} points "
                f"(format {index.get('format')!r}, points {index.get('points')!r}); rebuild it with this version"
            )
        self.index = index
        self.entries: list[dict] = index["poses"]

    @property
    def zip(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            self._zip = zipfile.ZipFile(self.path)
            self._pid = os.getpid()
        return self._zip

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, entry: dict) -> np.ma.MaskedArray:
        """The pose of an index entry as a float16 masked array; a damaged member names the file and pose."""
        try:
            return decode(self.zip.read(entry["member"]))
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as error:
            raise UserError(
                f"{self.path}: pose {entry['id']!r} is damaged ({type(error).__name__}: {error}); "
                "delete the file and rerun the stage that wrote it"
            ) from None

    def __iter__(self) -> Iterator[tuple[dict, np.ma.MaskedArray]]:
        for entry in self.entries:
            yield entry, self.read(entry)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_pid": -1}

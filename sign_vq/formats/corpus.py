"""Where poses and codes come from and go to, streamed: `.pose` files, folders, shards and archives in; a codes
corpus file (CSV, one row per pose) out and back in.

The codes corpus (``sign-vq encode --output codes.csv``) has the original sign-vq's columns (its ``poses_to_codes``)::

    file,fps,length,codes
    lexicon/essen.pose,24.0,73,417 12 980 3 417 12 981 3 ...

``file`` is the pose's id with ``.pose``, ``fps`` its frame rate as the file says it (the shortest text of the
file's float32: 29.97), ``length`` its frame count, and ``codes`` ``length x num_codebooks`` integers in
``0..codebook_size-1``, frame by frame (the codebooks of frame 0, then those of frame 1 ...), separated by single
spaces: text tokens a language model reads as they are (``len(codes) / length`` of them a frame). Encoding an archive
with a train/val split adds a ``split`` column (``train``, ``val``; empty for poses from other inputs). Reading takes
this layout, the original's (the same columns), and this project's earlier ``id,fps,frames,codes``; other columns
are ignored, and an id given twice is refused with both line numbers.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sign_vq.errors import UserError
from sign_vq.fileio import NAME_MAX, atomic_open, read_regular
from sign_vq.formats.posezip import PoseZip
from sign_vq.formats.shards import printable
from sign_vq.poses import preprocess, skeleton

log = logging.getLogger(__name__)
COLUMNS = ["file", "fps", "length", "codes"]  # the original sign-vq's
SPLIT = "split"  # the column an archive's train/val split adds
LAYOUTS = (("file", "length"), ("id", "frames"))  # (id, frame count) columns: this layout, the earlier one
POSE_SUFFIX = ".pose"  # written after the id in the file column (as the original wrote file names)
MAX_DECODE_FRAMES = 100_000  # frames decoded at once (~12.5 KB of memory each: 1.25 GB; 67 minutes at 25 fps)
MAX_CODE_CHARS = 256  # characters of codes a frame may take in a corpus row (20 codebooks of 11-digit codes)
POSE_BATCH = 64  # poses read and run together (their windows share forward passes)


csv.field_size_limit(1 << 30)  # a long pose's codes are one large field


@dataclass(frozen=True)
class Item:
    """One pose (or one pose's codes) to process: its id, its origin for messages, and how to read it."""

    id: str
    name: str
    read: Callable[[], object]
    split: str = ""  # an archive's train/val split


def _pose_reader(path: Path) -> Callable[[], tuple[np.ndarray, np.ndarray, float]]:
    def read() -> tuple[np.ndarray, np.ndarray, float]:
        pose = preprocess.preprocess_file(path)
        return pose.data, pose.mask, pose.fps

    return read


def _zip_reader(archive: PoseZip, index: int, fps: float) -> Callable[[], tuple[np.ndarray, np.ndarray, float]]:
    def read() -> tuple[np.ndarray, np.ndarray, float]:
        return (*skeleton.values_and_mask(archive.read(index)), fps)

    return read


def _zip_items(path: Path) -> Iterator[Item]:
    archive = PoseZip(path)
    for index in range(len(archive)):
        entry = archive.entry(index)
        reader = _zip_reader(archive, index, float(entry["fps"]))
        yield Item(entry["id"], f"{path}:{entry['id']}", reader, entry["split"] or "")


def files_of(item: Path, suffix: str) -> list[tuple[Path, str]]:
    """(file, id) of a file or of the ``*suffix`` files under a folder (id: the relative path without suffix)."""
    if item.is_dir():
        files = sorted(item.rglob(f"*{suffix}"))
        if not files:
            raise UserError(f"{item}: no *{suffix} files in this folder")
        return [(f, f.relative_to(item).with_suffix("").as_posix()) for f in files]
    if not item.exists():
        raise UserError(f"{item}: no such file or folder")
    return [(item, item.with_suffix("").name)]


def output_path(folder: Path, item_id: str, suffix: str) -> Path:
    """Where the output of ``item_id`` goes: ``folder/<id><suffix>``; an id that would leave ``folder`` (absolute,
    ``..``, empty parts) is a UserError."""
    parts = item_id.split("/")
    if not item_id or any(part in ("", ".", "..") for part in parts) or "\\" in item_id or "\0" in item_id:
        raise UserError(f"id {item_id!r}: not a relative path inside the output folder; rename it in the input")
    if any(len(os.fsencode(part + suffix)) > NAME_MAX for part in parts):
        raise UserError(f"id {item_id!r}: a file name longer than {NAME_MAX} bytes; shorten it in the input")
    return folder.joinpath(*parts[:-1], parts[-1] + suffix)


def count_poses(inputs: list[Path]) -> int:
    """How many poses :func:`pose_items` yields (opening a shard or archive reads only its index)."""
    return sum(len(PoseZip(i)) if i.suffix == ".zip" and i.is_file() else len(files_of(i, ".pose")) for i in inputs)


def has_splits(inputs: list[Path]) -> bool:
    """Whether an input is an archive with a train/val split (its codes corpus then gets a ``split`` column)."""
    return any(i.suffix == ".zip" and i.is_file() and bool(np.any(PoseZip(i).columns["split"])) for i in inputs)


def pose_items(inputs: list[Path]) -> Iterator[Item]:
    """The poses of ``.pose`` files, folders of them (recursively), shards and archives (``.zip``); ``read()`` gives
    the normalized pose (data frames x 178 x 3, mask frames x 178 True = missing, fps)."""
    for item in inputs:
        if item.suffix == ".zip" and item.is_file():
            yield from _zip_items(item)
        else:
            yield from (Item(pose_id, str(path), _pose_reader(path)) for path, pose_id in files_of(item, ".pose"))


def _npy_reader(path: Path, fps: float | None) -> Callable[[], tuple[np.ndarray, float]]:
    def read() -> tuple[np.ndarray, float]:
        if fps is None:
            raise UserError(f"{path}: a .npy codes file carries no frame rate; pass --fps")
        try:
            return np.load(io.BytesIO(read_regular(path)), allow_pickle=False), fps
        except (ValueError, OSError, EOFError) as error:
            raise UserError(f"{path}: not a .npy codes file ({type(error).__name__}: {error})") from None

    return read


def _row_reader(name: str, row: dict, length: str) -> Callable[[], tuple[np.ndarray, float]]:
    def read() -> tuple[np.ndarray, float]:
        try:
            fps, frames = float(row["fps"]), int(row[length])
            if frames > MAX_DECODE_FRAMES or len(row["codes"]) > MAX_CODE_CHARS * max(frames, 1):
                raise UserError(f"{name}: {frames} frames ({len(row['codes'])} characters of codes); decode takes at "
                                f"most {MAX_DECODE_FRAMES} frames a row: split the pose's codes into several rows")
            codes = np.array(row["codes"].split(), dtype=np.int64)
        except (TypeError, ValueError, AttributeError, OverflowError) as error:
            raise UserError(f"{name}: bad row ({error}); expected {','.join(COLUMNS)} as `sign-vq encode` writes")
        if frames <= 0 or len(codes) % frames:
            raise UserError(f"{name}: {len(codes)} codes do not make {frames} frames of equal width")
        return codes.reshape(frames, -1), fps

    return read


def _layout(path: Path, columns: list[str] | None) -> tuple[str, str]:
    """The (id, frame count) columns of a corpus header, or a UserError naming the file."""
    for layout in LAYOUTS:
        if {*layout, "fps", "codes"} <= set(columns or ()):
            return layout
    raise UserError(f"{path}: columns {columns}; expected {','.join(COLUMNS)} (a codes corpus)")


def _duplicate(name: str, pose_id: str, first: int) -> Callable[[], tuple[np.ndarray, float]]:
    def read() -> tuple[np.ndarray, float]:
        raise UserError(f"{name}: id {pose_id!r} is also on line {first}; give each pose one row")

    return read


def _csv_items(path: Path) -> Iterator[Item]:
    lines: dict[str, int] = {}  # id -> the line it was first on
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            id_column, length = _layout(path, reader.fieldnames)
            for row in reader:
                name = f"{path}:{reader.line_num}"
                pose_id = row[id_column] or name
                pose_id = pose_id.removesuffix(POSE_SUFFIX) if id_column == "file" else pose_id
                first = lines.setdefault(pose_id, reader.line_num)
                read = _row_reader(name, row, length) if first == reader.line_num else _duplicate(name, pose_id, first)
                yield Item(pose_id, name, read)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: cannot read the codes corpus ({error})") from None


def code_items(inputs: list[Path], fps: float | None) -> Iterator[Item]:
    """The codes of ``.npy`` files, folders of them, and codes corpora (``.csv``); ``read()`` gives (codes, fps)."""
    for item in inputs:
        if item.suffix == ".csv" and item.is_file():
            yield from _csv_items(item)
        else:
            yield from (Item(code_id, str(path), _npy_reader(path, fps)) for path, code_id in files_of(item, ".npy"))


def batches(items: Iterable[Item], total: int | None, desc: str) -> Iterator[list[Item]]:
    """``items`` in lists of :data:`POSE_BATCH`, with a progress bar on a terminal."""
    batch: list[Item] = []
    with tqdm(total=total, desc=desc, unit="pose", disable=None) as progress:
        for item in items:
            batch.append(item)
            if len(batch) == POSE_BATCH:
                yield batch
                progress.update(len(batch))
                batch = []
        if batch:
            yield batch
            progress.update(len(batch))


def twice(pose_id: str) -> str:
    """The error of an id that two inputs share."""
    return f"{pose_id}: this id occurs twice in the inputs; only the first was written"


def format_fps(fps: float) -> str:
    """A frame rate as the file says it: the shortest text that reads back as the same float32 (``29.97``, not
    ``29.969999313354492``; ``24.0``)."""
    return np.format_float_positional(np.float32(fps), unique=True, trim="0")


def codes_row(pose_id: str, fps: float, codes: np.ndarray) -> list[str]:
    """One corpus row: file (the id with ``.pose``), fps, length, and the codes as space-separated integers, frame
    by frame."""
    flat = " ".join(map(str, np.asarray(codes).ravel().tolist()))
    return [pose_id + POSE_SUFFIX, format_fps(fps), str(len(codes)), flat]


def write_corpus(path: Path, rows: Iterable[tuple[str, float, np.ndarray, str]], errors: list[str],
                 split: bool = False) -> int:
    """Write (id, fps, codes, split) rows as they come into the codes corpus ``path`` (atomically; the ``split``
    column only if ``split``); returns the row count. An id that is not UTF-8 (a file name's raw bytes) cannot be a
    row, and an id already written is not written again: they go to ``errors``, the rest is written."""
    count = 0
    written: set[str] = set()
    with atomic_open(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS + [SPLIT] * split)
        for pose_id, fps, codes, split_name in rows:
            try:
                pose_id.encode("utf-8")
            except UnicodeEncodeError:
                errors.append(f"{printable(pose_id)}: the name is not valid UTF-8, so the codes corpus cannot hold it; "
                              "rename the file")
                continue
            if pose_id in written:
                errors.append(twice(pose_id))
                continue
            written.add(pose_id)
            writer.writerow(codes_row(pose_id, fps, codes) + [split_name] * split)
            count += 1
    return count

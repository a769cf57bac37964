"""What a training folder holds, and whether a new `sign-vq train` continues it or starts a new run.

A run is identified by what its weights depend on: the `train` keys that change the model or the data it sees, the
statistics file and the archive's content. Keys that only change the schedule or the resources
(:func:`sign_vq.config.schedule_keys`) resume the run (raising ``max_steps`` trains longer). Anything else starts a
new run, and the previous one is moved aside whole (checkpoints, CSV logs, W&B run id, renders) to ``DIR/previous/run-<time>/``.
One run at a time holds a training folder (:func:`exclusive`), and a run resumes only from a checkpoint stamped with
its own identity.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import struct
import time
from pathlib import Path
from typing import Iterator

from sign_vq.config import TrainConfig, as_dict, schedule_keys
from sign_vq.errors import UserError
from sign_vq.fileio import write_json
from sign_vq.model.checkpoint import read_checkpoint

log = logging.getLogger(__name__)
RUN_FILE = "run.json"
PREVIOUS = "previous"
LOCK_FILE = "train.lock"
RUN_KEY = "sign_vq_run"  # the digest of the run's identity, in every checkpoint the run writes
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def zip_fingerprint(path: Path) -> str:
    """SHA-256 of a zip's central directory (every member's name, size and CRC-32): a content fingerprint of a
    many-GB archive that reads a few MB, without building one Python object per member."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        tail_size = min(size, 65_557)  # end record (22 bytes) + the longest comment
        handle.seek(size - tail_size)
        tail = handle.read(tail_size)
        end = tail.rfind(_EOCD)
        if end < 0:
            raise UserError(f"{path}: not a zip archive (no end of central directory); rebuild it with `sign-vq archive`")
        directory_size, directory_offset = struct.unpack("<II", tail[end + 12 : end + 20])
        locator = end - 20
        if locator >= 0 and tail[locator : locator + 4] == _EOCD64_LOCATOR:
            (record,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
            handle.seek(record + 40)
            directory_size, directory_offset = struct.unpack("<QQ", handle.read(16))
        if directory_offset + directory_size > size:
            raise UserError(f"{path}: truncated zip archive; rebuild it with `sign-vq archive`")
        digest = hashlib.sha256()
        handle.seek(directory_offset)
        remaining = directory_size
        while remaining:
            block = handle.read(min(remaining, 1 << 20))
            if not block:
                raise UserError(f"{path}: truncated zip archive; rebuild it with `sign-vq archive`")
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()


def run_identity(train_config: TrainConfig, archive: Path, stats: Path) -> dict:
    """What the weights of a run depend on (JSON-serializable)."""
    return {
        "train": {key: value for key, value in as_dict(train_config).items() if key not in schedule_keys()},
        "archive": zip_fingerprint(archive),
        "stats": sha256_file(stats),
    }


def identity_digest(identity: dict) -> str:
    """A short fingerprint of a run identity, stamped into its checkpoints (:data:`RUN_KEY`)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def exclusive(output: Path) -> Iterator[None]:
    """Hold ``output`` for one training run: an exclusive lock on ``output/train.lock`` (which names the holder's
    pid, host and start time), released when the block ends; a UserError naming the holder if another run has it."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process that has not written its name yet"
            raise UserError(
                f"{output} is in use by another training run ({holder}, see {path}); wait for it to end or train into "
                "another --output"
            ) from None
        except OSError as error:  # e.g. a file system mounted without lock support
            log.warning("%s: cannot lock the training folder (%s); no other run may write into it", path, error)
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        yield


def _saved_identity(output: Path) -> dict | None:
    try:
        return json.loads((output / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None


def _differences(saved: dict, identity: dict) -> list[str]:
    keys = sorted(set(saved.get("train", {})) | set(identity["train"]))
    changed = [f"train.{k}" for k in keys if saved.get("train", {}).get(k) != identity["train"].get(k)]
    return changed + [name for name in ("archive", "stats") if saved.get(name) != identity[name]]


def move_aside(output: Path) -> Path | None:
    """Move everything in ``output`` except earlier runs and the lock to ``output/previous/run-<time>``; None if it was
    empty."""
    previous = output / PREVIOUS
    if previous.exists() and not previous.is_dir():
        raise UserError(f"{previous} is a file, where earlier runs are kept; move it out of {output} and rerun")
    contents = [p for p in output.iterdir() if p.name not in (PREVIOUS, LOCK_FILE)]
    if not contents:
        return None
    target = output / PREVIOUS / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = 1
    while target.exists():
        target = target.with_name(f"{target.name.split('.')[0]}.{suffix}")
        suffix += 1
    target.mkdir(parents=True)
    for path in contents:
        path.rename(target / path.name)
    return target


def resume_point(output: Path, identity: dict, last: Path) -> Path | None:
    """``last`` when it continues the run of ``identity``, else None (a new run). Read-only, so every rank can ask,
    and the answer stays the same after rank zero's :func:`start_run`. A ``last`` that the run of ``identity`` did not
    write (another run's, another model's, forged) is refused: it is never resumed nor published as the model."""
    if not last.exists() or _saved_identity(output) != identity:
        return None
    if read_checkpoint(last).get(RUN_KEY) != identity_digest(identity):
        raise UserError(
            f"{last} was not written by the run that {output / RUN_FILE} describes (another run's or another model's "
            "checkpoint, or an edited one); delete it to start this run over, or train into another --output"
        )
    return last


def start_run(output: Path, identity: dict) -> None:
    """A new run in ``output``: the old run (if any) moved aside, ``identity`` recorded. Global rank zero only."""
    output.mkdir(parents=True, exist_ok=True)
    saved = _saved_identity(output)
    if saved is not None and saved != identity:
        log.warning("a new run: changed since the last one: %s", ", ".join(_differences(saved, identity)))
    moved = move_aside(output)
    if moved is not None:
        log.warning("the previous run was moved to %s", moved)
    write_json(output / RUN_FILE, identity)

"""What a training folder holds, and whether a new `sign-vq train` continues it or starts a new run.

A run is identified by what its weights depend on: the `train` keys that change the model or the data it sees, the
statistics file and the archive's content. Keys that only change the schedule or the resources
(:data:`SCHEDULE_KEYS`) resume the run (raising ``max_steps`` trains longer). Anything else starts a new run, and
the previous one is moved aside whole (checkpoints, CSV logs, W&B run id, renders) to ``DIR/previous/run-<time>/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import time
from pathlib import Path

from sign_vq.config import TrainConfig, as_dict
from sign_vq.errors import UserError
from sign_vq.fileio import write_json

log = logging.getLogger(__name__)

SCHEDULE_KEYS = frozenset({
    "max_steps", "accelerator", "devices", "num_nodes", "num_workers", "precision",
    "checkpoint_every", "keep_every", "val_every", "render_every", "log_every", "wandb",
})
RUN_FILE = "run.json"
PREVIOUS = "previous"
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
        "train": {key: value for key, value in as_dict(train_config).items() if key not in SCHEDULE_KEYS},
        "archive": zip_fingerprint(archive),
        "stats": sha256_file(stats),
    }


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
    """Move everything in ``output`` except earlier runs to ``output/previous/run-<time>``; None if it was empty."""
    contents = [p for p in output.iterdir() if p.name != PREVIOUS]
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
    and the answer stays the same after rank zero's :func:`start_run`."""
    return last if last.exists() and _saved_identity(output) == identity else None


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

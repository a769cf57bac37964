"""The training archive: normalize shards joined into one pose zip with a deterministic train/validation split.

`sign-vq archive --output ARCHIVE SHARD...` streams every pose member from the shards into ARCHIVE (memory stays flat
however large the data), assigns each pose to `train` or `val` by a hash of its id, and writes the index last.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path

from tqdm import tqdm

from sign_vq.normalize import number_in
from sign_vq.posezip import PoseZip, PoseZipWriter

HELP = "join normalize shards into the training archive with a hash-based train/validation split"
log = logging.getLogger(__name__)


def split_of(pose_id: str, val_fraction: float) -> str:
    """`val` for a stable ``val_fraction`` of ids (by a hash of the id, never by file order), else `train`."""
    digest = hashlib.blake2b(pose_id.encode("utf-8"), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "big") / 2**64 < val_fraction else "train"


def build_archive(shards: list[Path], output: Path, val_fraction: float = 0.1) -> dict:
    """Write ``output`` from ``shards``; returns counts per split."""
    counts = {"train": 0, "val": 0}
    frames = {"train": 0, "val": 0}
    with PoseZipWriter(output) as writer:
        for shard in shards:
            source = PoseZip(shard)
            for entry in tqdm(source.entries, desc=f"archive {Path(shard).name}", unit="pose", disable=None):
                split = split_of(entry["id"], val_fraction)
                writer.copy_from(source, entry, split=split)
                counts[split] += 1
                frames[split] += entry["frames"]
        writer.close(val_fraction=val_fraction, counts=counts, frames=frames, shards=[str(s) for s in shards])
    log.info("%s: %d train / %d val poses (%d / %d frames)", output, counts["train"], counts["val"], frames["train"], frames["val"])
    return counts


def add_arguments(parser: argparse.ArgumentParser, _stage: str) -> None:
    parser.add_argument("--output", required=True, type=Path, help="archive to write (.zip)")
    parser.add_argument("--val-fraction", type=number_in(0, 1, high_open=True), default=0.1,
                        help="fraction of poses for validation (0 to below 1)")
    parser.add_argument("shards", nargs="+", type=Path, metavar="SHARD", help="normalize shards (.zip)")


def run(args: argparse.Namespace) -> None:
    build_archive(args.shards, args.output, args.val_fraction)


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("archive")

"""The training archive: normalize shards joined into one pose zip with a deterministic train/validation split.

`sign-vq archive --output ARCHIVE SHARD...` copies the pose bytes of every shard into ARCHIVE as they stand (one
sequential copy per shard, checked by the CRC of its pose region; memory holds only the compact index columns,
~90 bytes and the id per pose), assigns each pose to `train` or `val` by a hash of its id, and writes the index last.
Disk: the archive is about as large as its shards together (~730 bytes a frame on real poses).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sign_vq.arguments import number_in
from sign_vq.config import default
from sign_vq.dataset.archive import build_archive


def add_arguments(parser: argparse.ArgumentParser, _stage: str) -> None:
    parser.add_argument("--output", required=True, type=Path, help="archive to write (.zip)")
    parser.add_argument("--val-fraction", type=number_in(0, 1, high_open=True), default=default("archive.val_fraction"),
                        help="fraction of poses for validation (0 to below 1)")
    parser.add_argument("shards", nargs="+", type=Path, metavar="SHARD", help="normalize shards (.zip)")


def run(args: argparse.Namespace) -> None:
    build_archive(args.shards, args.output, args.val_fraction)


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("archive")

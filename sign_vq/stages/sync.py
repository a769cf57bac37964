"""Sync stage: mirror a GCS bucket and write the shard lists.

`sign-vq sync --bucket gs://BUCKET[/PREFIX] --output MIRROR --lists LISTS --shards K` lists the bucket once,
downloads only new or changed objects (size and crc32c against `MIRROR/manifest.tsv` and the file on disk) in
parallel threads, each into `MIRROR/.sync-tmp/`, verifies its crc32c (computed here with `google_crc32c`) and
renames it into place. `manifest.tsv` lists every verified file of the mirror that is in the bucket; objects
removed from the bucket are kept (listed in `removed.tsv`) or deleted with `--delete-removed`. Names that could
escape the mirror or clash with another object are refused and reported. `LISTS/shard-NNN.txt` list the
mirrored `.pose` files by a stable hash of their name, and `LISTS/sync-summary.json` reports the run.

One run is :func:`sign_vq.mirror.sync.sync_bucket` (its steps: :mod:`sign_vq.mirror`). A local folder needs no
sync: the workflow lists it itself.

Exit status: 0 when every object is mirrored, 1 when downloads still fail after the retries (everything else is
written first, and the failed names are logged and in the summary), 2 for usage, credential or bucket errors.
"""

from __future__ import annotations

import argparse

from sign_vq.mirror.sync import sync_bucket


def run(args: argparse.Namespace) -> int:
    summary = sync_bucket(
        args.bucket, args.output, args.lists, args.shards, threads=args.threads,
        delete_removed=args.delete_removed, anonymous=args.anonymous, retries=args.retries,
        retry_wait=args.retry_wait, timeout=args.timeout, verify=args.verify,
    )
    return 1 if summary.failed_count else 0


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("sync")

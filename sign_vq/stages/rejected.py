"""`sign-vq rejected`: one table of every input the pipeline left out, and why.

Merges the entries the input listing skipped (`LISTS/skipped.tsv`: not a pose file, unreadable, a name that cannot be
listed) and the files each normalize shard rejected (`shard-NNN.zip.report.json`: not MediaPipe Holistic, corrupt,
outside the input folder, ...) into one TSV with the columns `file`, `stage` and `reason`, paths normalized
(`results/lists/../../poses/a.pose` reads `poses/a.pose`) and escaped for one line each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sign_vq.dataset.rejected import write_rejected


def add_arguments(parser: argparse.ArgumentParser, _stage: str) -> None:
    parser.add_argument("--output", required=True, type=Path, help="the merged table to write (.tsv)")
    parser.add_argument("--skipped", type=Path, help="the listing's report of skipped entries (skipped.tsv)")
    parser.add_argument("reports", nargs="*", type=Path, metavar="REPORT",
                        help="normalize shard reports (shard-NNN.zip.report.json)")


def run(args: argparse.Namespace) -> int:
    write_rejected(args.output, args.skipped, args.reports)
    return 0


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("rejected")

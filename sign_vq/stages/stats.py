"""Per-point sufficient statistics (count, sum, sum of squares in float64) and their exact merge.

`sign-vq stats --output STATS SHARD...` merges the statistics stored in normalize shards into the dataset
mean/std (a JSON file) that training standardizes with and saves into the model. It reads only each shard's
metadata, never its pose index. Statistics are validated when merged and when loaded (:func:`sign_vq.formats.statistics.check`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sign_vq.formats.statistics import merge_shards, write_stats


def add_arguments(parser: argparse.ArgumentParser, _stage: str) -> None:
    parser.add_argument("--output", required=True, type=Path, help="statistics JSON to write")
    parser.add_argument("shards", nargs="+", type=Path, metavar="SHARD", help="normalize shards (.zip)")


def run(args: argparse.Namespace) -> None:
    stats = merge_shards(args.shards)
    write_stats(stats, args.output)


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("stats")

"""Per-shard normalize: preprocess every pose of a shard into one pose zip with its per-point statistics.

`sign-vq normalize --output SHARD (--files-from LIST | INPUT...)` writes SHARD atomically and a report
(`SHARD.report.json`: counts and every skipped file with its reason). Bad files are skipped; the shard fails
(exit 2, no shard written, a previous shard and its report left in place) only when the fraction of bad files
exceeds ``--max-bad-fraction``; its reasons then go to `SHARD.failed.json`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sign_vq.arguments import number_in
from sign_vq.config import default
from sign_vq.dataset.normalize import input_files, normalize_shard
from sign_vq.formats.shards import read_list
from sign_vq.poses import preprocess


def add_arguments(parser: argparse.ArgumentParser, _stage: str) -> None:
    parser.add_argument("--output", required=True, type=Path, help="shard to write (.zip)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--files-from", type=Path, metavar="LIST", help="text file listing .pose files")
    source.add_argument("inputs", nargs="*", type=Path, default=[], metavar="INPUT",
                        help=".pose files or folders of them (searched recursively)")
    parser.add_argument("--root", type=Path,
                        help="pose ids are paths relative to this folder (default: the folder given as the only INPUT)")
    parser.add_argument("--max-bad-fraction", type=number_in(0, 1), default=default("normalize.max_bad_fraction"),
                        help="fail above this fraction of bad files (0 to 1; default %(default)s)")
    parser.add_argument("--outlier-limit", type=number_in(0, math.inf, low_open=True),
                        default=preprocess.DEFAULT_OUTLIER_LIMIT,
                        help="mask points farther than this many shoulder widths from the shoulder centre (> 0; "
                        "inf: only those too far for float16)")
    parser.add_argument("--no-wrist-correction", dest="fix_wrists", action="store_false",
                        help="keep the body-model wrists instead of the hand-model wrists")


def run(args: argparse.Namespace) -> int:
    files, skipped = (read_list(args.files_from), []) if args.files_from else input_files(args.inputs)
    folder = args.inputs[0] if len(args.inputs) == 1 and args.inputs[0].is_dir() else None
    normalize_shard(
        files,
        args.output,
        root=args.root or folder,
        skipped=skipped,
        max_bad_fraction=args.max_bad_fraction,
        outlier_limit=args.outlier_limit,
        fix_wrists=args.fix_wrists,
    )
    return 0


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("normalize")

"""Per-shard normalize: preprocess every pose of a shard into one pose zip with its per-point statistics.

`sign-vq normalize --output SHARD (--files-from LIST | INPUT...)` writes SHARD atomically and a report
(`SHARD.report.json`: counts and every skipped file with its reason). Bad files are skipped; the shard fails
(exit 2, no shard written, a previous shard and its report left in place) only when the fraction of bad files
exceeds ``--max-bad-fraction``; its reasons then go to `SHARD.failed.json`.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from sign_vq import preprocess
from sign_vq.errors import BadPoseError, UserError
from sign_vq.fileio import write_json
from sign_vq.posezip import PoseZipWriter
from sign_vq.shards import read_list, scan_poses
from sign_vq.stats import PointStats

REPORT = ".report.json"  # beside a written shard: counts and every skipped file with its reason
FAILED = ".failed.json"  # beside a shard that failed: the same report (not a declared output, so it survives)
log = logging.getLogger(__name__)


def pose_id(path: Path, root: Path | None) -> str:
    """The pose's id: its path relative to ``root`` without `.pose` (stable across machines). A path outside
    ``root`` (compared as written, `..` resolved, symlinks not followed) is a bad file: a list names it by mistake."""
    if root is not None:
        try:
            path = Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
        except ValueError:
            raise BadPoseError(f"{path}: outside the input folder {root}; list only files under --root") from None
    return path.with_suffix("").as_posix().lstrip("/")


def report_path(shard: Path, suffix: str) -> Path:
    """``SHARD.zip.report.json`` or ``SHARD.zip.failed.json``."""
    return shard.with_name(shard.name + suffix)


MEMORY_BASE_MB = 500  # the interpreter, numpy, pose-format and a shard's index rows
MEMORY_PER_INPUT = 2.2  # peak bytes per byte of the largest file, read whole (measured 2.0 on a 185 MB file)


def memory_mb(sizes: Iterable[int | None], attempt: int = 1) -> int:
    """The memory (MB, for Slurm's ``mem_mb``) to normalize files of ``sizes`` (bytes; None where unknown): each file
    is read whole, so the peak follows the largest one; times the Snakemake ``attempt``."""
    largest = max((size for size in sizes if size is not None), default=0)
    return math.ceil((MEMORY_BASE_MB + MEMORY_PER_INPUT * largest / 2**20) * attempt)


def normalize_shard(
    files: list[Path],
    output: Path,
    *,
    root: Path | None = None,
    max_bad_fraction: float = 0.5,
    outlier_limit: float = preprocess.DEFAULT_OUTLIER_LIMIT,
    fix_wrists: bool = True,
    skipped: Iterable[tuple[str, str]] = (),
) -> dict:
    """Normalize ``files`` into the shard ``output``; returns the report (also written beside the shard).
    ``skipped``: (path, reason) of input entries that are no pose files to read (`shards.scan_poses`), bad files."""
    stats = PointStats.zeros()
    bad: list[dict] = [{"file": path, "reason": reason} for path, reason in skipped]
    total = len(files) + len(bad)
    frames = outliers = 0
    with PoseZipWriter(output) as writer:
        for path in tqdm(files, desc=f"normalize {output.name}", unit="file", disable=None):
            try:
                name = pose_id(path, root)
                pose = preprocess.preprocess_file(path, outlier_limit=outlier_limit, fix_wrists=fix_wrists)
            except BadPoseError as error:
                log.warning("%s: skipped %s", output, error)
                bad.append({"file": str(path), "reason": str(error)})
                continue
            stats.add_values(pose.data, pose.mask)
            writer.add(name, pose.data, pose.mask, pose.info())
            frames += pose.frames
            outliers += pose.outliers
        report = {
            "shard": str(output),
            "files": total,
            "ok": len(writer),
            "bad": len(bad),
            "frames": frames,
            "outlier_points": outliers,
            "bad_files": bad,
        }
        fraction = len(bad) / max(total, 1)
        if not total or fraction > max_bad_fraction:  # raising inside the block discards the shard
            failed = report_path(output, FAILED)
            write_json(failed, report)
            raise UserError(
                f"{output}: {len(bad)} of {total} files are bad ({fraction:.0%} > --max-bad-fraction "
                f"{max_bad_fraction:.0%}); no shard written — see {failed} for each file's reason"
                if total
                else f"{output}: the shard has no input files; check the file list"
            )
        writer.close(stats=stats.to_dict(), report={k: v for k, v in report.items() if k != "bad_files"})
    write_json(report_path(output, REPORT), report)
    report_path(output, FAILED).unlink(missing_ok=True)
    log.info("%s: %d poses, %d frames, %d bad files, %d outlier points masked", output, report["ok"], frames, len(bad), outliers)
    return report


def number_in(
    low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a number from ``low`` to ``high``, each bound included unless open; NaN is refused."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected one in {interval}") from None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):  # NaN is neither
            raise argparse.ArgumentTypeError(f"{text} is outside {interval}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser, _stage: str) -> None:
    parser.add_argument("--output", required=True, type=Path, help="shard to write (.zip)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--files-from", type=Path, metavar="LIST", help="text file listing .pose files")
    source.add_argument("inputs", nargs="*", type=Path, default=[], metavar="INPUT",
                        help=".pose files or folders of them (searched recursively)")
    parser.add_argument("--root", type=Path,
                        help="pose ids are paths relative to this folder (default: the folder given as the only INPUT)")
    parser.add_argument("--max-bad-fraction", type=number_in(0, 1), default=0.5,
                        help="fail above this fraction of bad files (0 to 1)")
    parser.add_argument("--outlier-limit", type=number_in(0, math.inf, low_open=True),
                        default=preprocess.DEFAULT_OUTLIER_LIMIT,
                        help="mask points farther than this many shoulder widths from the shoulder centre (> 0; "
                        "inf: only those too far for float16)")
    parser.add_argument("--no-wrist-correction", dest="fix_wrists", action="store_false",
                        help="keep the body-model wrists instead of the hand-model wrists")


def input_files(inputs: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files ``inputs`` name, a folder standing for its `*.pose` files (recursively, `shards.scan_poses`), and
    the entries of those folders that cannot be read as pose files, with the reason."""
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for item in inputs:
        if item.is_dir():
            listing = scan_poses(item)
            files += map(Path, listing.files)
            skipped += listing.skipped
        else:
            files.append(item)
    return files, skipped


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

"""Per-shard normalize: preprocess every pose of a shard into one pose zip with its per-point statistics, and the
memory a shard's job needs."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from sign_vq.config import default
from sign_vq.errors import BadPoseError, UserError
from sign_vq.fileio import write_json
from sign_vq.formats.shards import scan_poses
from sign_vq.formats.statistics import PointStats
from sign_vq.formats.zipwriter import PoseZipWriter
from sign_vq.poses import preprocess

log = logging.getLogger(__name__)
REPORT = ".report.json"  # beside a written shard: counts and every skipped file with its reason
FAILED = ".failed.json"  # beside a shard that failed: the same report (not a declared output, so it survives)


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
    max_bad_fraction: float = default("normalize.max_bad_fraction"),
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

"""The data path at the bucket's scale (`make bench-scale`): shards → stats → archive → open → DataLoader, per N poses.

For each N, writes N poses of 4 frames (windows of the real example poses, so they compress like real data) with the
project's own `PoseZipWriter` into shards of 10,000 under a temporary folder, then measures, each in a fresh process:
`sign-vq stats` and `sign-vq archive` (time, MB/s, peak RSS) against a plain sequential copy of the same bytes made
in the same run, the archive's open time and RSS, the time to the first batch and the unique memory (USS) of each
of 2 DataLoader workers after 100 batches, and bytes per frame; then the growth per pose between the N's. It also
reports the real files' bytes per frame and decode time (examples/poses, and ../shared/data/poses when present).

    python -m benchmarks.bench_scale [--sizes 10000,100000,560000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sign_vq.dataset.archive import build_archive
from sign_vq.dataset.normalize import normalize_shard
from sign_vq.formats.posezip import PoseZip
from sign_vq.formats.statistics import PointStats
from sign_vq.formats.zipwriter import PoseZipWriter

REPO = Path(__file__).resolve().parents[1]
REAL = {"examples/poses": REPO / "examples" / "poses", "../shared/data/poses": REPO.parent / "shared" / "data" / "poses"}
SIZES = (10_000, 100_000, 560_000)
PER_SHARD = 10_000
FRAMES = 4
CHUNK = 4 << 20
STEP_MS = 17.6  # a training step at batch 2 on this machine (`make bench`: 56.7 steps/s)

# Each probe runs in a fresh process and prints one JSON line.
PROBE_HEAD = """
import json, os, resource, sys, time
def rss_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def uss_mb(pid="self"):
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        fields = dict(line.split(":")[:2] for line in handle if line.startswith("Private"))
    return sum(int(v.split()[0]) for v in fields.values()) / 1024
"""
STAGE_PROBE = PROBE_HEAD + """
from sign_vq.cli import main
import sign_vq.stages.archive, sign_vq.stages.stats  # imported before the clock starts
start = time.perf_counter()
status = main(sys.argv[1:])
print(json.dumps({"status": status, "seconds": time.perf_counter() - start, "peak_mb": peak_mb()}))
"""
OPEN_PROBE = PROBE_HEAD + """
import numpy as np
from sign_vq.formats.posezip import PoseZip
before, private = rss_mb(), uss_mb()
start = time.perf_counter()
archive = PoseZip(sys.argv[1])
archive.read(0)
seconds = time.perf_counter() - start
train = archive.split("train")
archive.read(train[len(train) - 1])
print(json.dumps({"seconds": seconds, "rss_mb": rss_mb() - before, "uss_mb": uss_mb() - private}))
"""
LOADER_PROBE = PROBE_HEAD + """
from sign_vq.config import train_config
from sign_vq.training.data import PoseDataModule
def children():
    pids = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as handle:
            pids += [int(p) for p in handle.read().split()]
    return pids
config = train_config({"batch_size": 2, "max_frames": 128, "num_workers": 2, "max_steps": 200})
start = time.perf_counter()
data = PoseDataModule(sys.argv[1], config)
data.trainer = None
batches = iter(data.train_dataloader())
next(batches)
first = time.perf_counter() - start
for _ in range(99):
    next(batches)
workers = [uss_mb(pid) for pid in children()]
del batches  # shut the persistent workers down before exit (they ignore SIGTERM)
print(json.dumps({"first_batch_s": first, "worker_uss_mb": workers, "main_rss_mb": rss_mb()}))
"""


def probe(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"probe failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def real_windows() -> tuple[np.ndarray, np.ndarray]:
    """The example poses' frames, normalized, back to back (values, mask): the synthetic poses are windows of them."""
    with tempfile.TemporaryDirectory() as folder:
        shard = Path(folder) / "examples.zip"
        normalize_shard(sorted(REAL["examples/poses"].rglob("*.pose")), shard, root=REAL["examples/poses"])
        poses = [pose for _, pose in PoseZip(shard)]
    frames = np.ma.concatenate(poses)
    return np.ma.getdata(frames).astype(np.float16), np.ma.getmaskarray(frames).any(-1)


def synthesize(count: int, folder: Path) -> list[Path]:
    """``count`` 4-frame poses in shards of 10,000, written with the project's writer."""
    values, mask = real_windows()
    starts = (np.arange(count) * 7) % (len(values) - FRAMES)
    shards = []
    for first in range(0, count, PER_SHARD):
        shards.append(folder / f"shard-{first // PER_SHARD:03d}.zip")
        with PoseZipWriter(shards[-1]) as writer:
            stats = PointStats.zeros()
            for i in range(first, min(first + PER_SHARD, count)):
                window = slice(starts[i], starts[i] + FRAMES)
                stats.add_values(values[window], mask[window])
                writer.add(f"lang-{i % 40}/video-{i:07d}", values[window], mask[window], {"fps": 25.0})
            writer.close(stats=stats.to_dict())
    return shards


def plain_copy(shards: list[Path], output: Path) -> float:
    """Seconds to copy the shards' bytes one after the other into ``output`` (the baseline)."""
    start = time.perf_counter()
    with open(output, "wb") as target:
        for shard in shards:
            with open(shard, "rb") as source:
                shutil.copyfileobj(source, target, CHUNK)
    seconds = time.perf_counter() - start
    output.unlink()
    return seconds


def measure(count: int, work: Path) -> dict:
    folder = work / f"n{count}"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    shards = synthesize(count, folder)
    result = {"n": count, "synth_s": time.perf_counter() - start}
    shard_bytes = sum(s.stat().st_size for s in shards)
    stats = probe(STAGE_PROBE, "stats", "--output", str(folder / "stats.json"), *map(str, shards))
    copies, archives = [], []
    for _ in range(2):  # alternate, best of two: the box is shared
        copies.append(plain_copy(shards, folder / "copy.bin"))
        archives.append(probe(STAGE_PROBE, "archive", "--output", str(folder / "archive.zip"), *map(str, shards)))
    archive = min(archives, key=lambda a: a["seconds"])
    archive_bytes = (folder / "archive.zip").stat().st_size
    opened = probe(OPEN_PROBE, str(folder / "archive.zip"))
    loader = probe(LOADER_PROBE, str(folder / "archive.zip"))
    result.update(
        shard_mb=shard_bytes / 2**20, stats_s=stats["seconds"], stats_peak_mb=stats["peak_mb"],
        archive_s=archive["seconds"], archive_peak_mb=archive["peak_mb"], copy_s=min(copies),
        archive_mb_s=shard_bytes / 2**20 / archive["seconds"], copy_mb_s=shard_bytes / 2**20 / min(copies),
        open_s=opened["seconds"], open_rss_mb=opened["rss_mb"], open_uss_mb=opened["uss_mb"],
        first_batch_s=loader["first_batch_s"],
        worker_uss_mb=max(loader["worker_uss_mb"]), bytes_per_frame=archive_bytes / (count * FRAMES),
    )
    shutil.rmtree(folder)
    return result


def real_files() -> list[str]:
    """Bytes per frame (of the archive: no shard statistics) and decode time of the real files present."""
    lines = []
    for name, folder in REAL.items():
        if not folder.is_dir():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            shard, archive = Path(tmp) / "real.zip", Path(tmp) / "archive.zip"
            report = normalize_shard(sorted(folder.rglob("*.pose")), shard, root=folder, max_bad_fraction=1.0)
            build_archive([shard], archive)
            zipped = PoseZip(archive)
            start = time.perf_counter()
            for index in range(len(zipped)):
                zipped.read(index)
            per_pose_us = (time.perf_counter() - start) / len(zipped) * 1e6
            per_frame = archive.stat().st_size / report["frames"]
        step_ms = per_pose_us * 2 / 1000  # a step of batch 2 decodes 2 whole poses
        lines.append(f"{name}: {report['ok']} poses, {report['frames']:,} frames: archive {per_frame:.0f} bytes/frame; "
                     f"decode {per_pose_us / (report['frames'] / report['ok']):.1f} µs/frame, {per_pose_us:.0f} µs/pose "
                     f"= {step_ms:.2f} ms per batch-2 step ({100 * step_ms / STEP_MS:.1f} % of a {STEP_MS} ms "
                     "training step, spread over the DataLoader workers)")
    return lines


def table(results: list[dict]) -> list[str]:
    rows = [
        ("shards (MB)", "shard_mb", "{:.0f}"),
        ("`sign-vq stats` (s / peak RSS MB)", ("stats_s", "stats_peak_mb"), "{:.2f} s / {:.0f}"),
        ("`sign-vq archive` (s / peak RSS MB)", ("archive_s", "archive_peak_mb"), "{:.2f} s / {:.0f}"),
        ("archive vs plain copy (MB/s)", ("archive_mb_s", "copy_mb_s"), "{:.0f} vs {:.0f}"),
        ("open + first read (s / +RSS MB / +USS MB)", ("open_s", "open_rss_mb", "open_uss_mb"), "{:.3f} s / +{:.1f} / +{:.1f}"),
        ("DataLoader worker USS after 100 batches (MB)", "worker_uss_mb", "{:.0f}"),
        ("time to first batch (s)", "first_batch_s", "{:.2f}"),
        ("bytes per frame", "bytes_per_frame", "{:.0f}"),
    ]
    lines = ["| | " + " | ".join(f"{r['n']:,} poses" for r in results) + " |", "|---" * (len(results) + 1) + "|"]
    for label, keys, fmt in rows:
        keys = keys if isinstance(keys, tuple) else (keys,)
        lines.append(f"| {label} | " + " | ".join(fmt.format(*(r[k] for k in keys)) for r in results) + " |")
    for a, b in zip(results, results[1:]):
        per = lambda key: (b[key] - a[key]) * 2**20 / (b["n"] - a["n"])  # noqa: E731
        lines.append(f"growth {a['n']:,} → {b['n']:,} per pose: archive peak {per('archive_peak_mb'):.0f} B, "
                     f"open {per('open_rss_mb'):.1f} B, worker {per('worker_uss_mb'):.1f} B; "
                     f"archive {b['archive_s'] / a['archive_s']:.1f}× the time for {b['n'] / a['n']:.0f}× the poses")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated pose counts")
    parser.add_argument("--workdir", type=Path, help="folder for the synthetic data (default: a temporary one)")
    args = parser.parse_args(argv or [])  # `python -m benchmarks scale` calls main() with the defaults
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="sign-vq-scale-", dir=args.workdir) as work:
        results = []
        for count in sizes:
            results.append(measure(count, Path(work)))
            print(json.dumps(results[-1]), flush=True)
    print("\n".join(["", *table(results), "", *real_files()]))


if __name__ == "__main__":
    main(sys.argv[1:])

"""The workflow at the bucket's scale (`make bench-workflow`): what a dry run, a cluster job's parse and a rerun cost
as the input folder grows.

For each N, builds N tiny `.pose` files (16 real 4-frame windows of the example poses, hard-linked, 1,000 per
folder) under a temporary folder and measures, side by side: the folder listing (`scan_poses`, one scandir walk
with a stat per file) against `find DIR -name '*.pose' | wc -l`; `snakemake -n` with 256 shards (wall time and peak
memory of the Snakemake process); the parse of one cluster job (the command Snakemake runs inside a job:
`--mode remote --target-jobs normalize:shard=000`, dry) after the lists exist. At the largest N it then runs the
whole workflow for real (normalize, stats, archive, a few training steps, render) with every stage's peak memory
(Snakemake's benchmark files), a rerun with nothing to do, and a rerun after one file is rewritten with other bytes
of the same size (exactly one normalize job).

    python -m benchmarks.bench_workflow [--sizes 20000,100000,560000] [--shards 256] [--no-run] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from pose_format import Pose
from pose_format.numpy import NumPyPoseBody

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "poses"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
SIZES = (20_000, 100_000, 560_000)
PER_FOLDER = 1_000
VARIANTS = 16
FRAMES = 4
GNU_TIME = "/usr/bin/time"
STAGES = ("normalize", "stats", "archive", "train", "render")
TRAIN = {  # a few steps of a small model: the workflow's cost is measured, not the training's
    "max_steps": 4, "batch_size": 4, "max_frames": 16, "warmup_steps": 1, "checkpoint_every": 2, "val_every": 2,
    "log_every": 2, "accelerator": "cpu", "wandb": {"mode": "disabled"},
    "model": {"d_model": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1},
}


def tiny_poses(folder: Path) -> list[Path]:
    """``VARIANTS`` real poses of ``FRAMES`` frames (windows of the examples), as `.pose` files."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(EXAMPLES.rglob("*.pose"))
    made = []
    for i in range(VARIANTS):
        pose = Pose.read(sources[i % len(sources)].read_bytes())
        start = (i * 3) % max(1, len(pose.body.data) - FRAMES)
        window = slice(start, start + FRAMES)
        body = NumPyPoseBody(fps=pose.body.fps, data=pose.body.data[window], confidence=pose.body.confidence[window])
        buffer = io.BytesIO()
        Pose(pose.header, body).write(buffer)
        made.append(folder / f"tiny-{i:02d}.pose")
        made[-1].write_bytes(buffer.getvalue())
    return made


def build_tree(root: Path, count: int, sources: list[Path]) -> None:
    """``count`` hard links to ``sources`` under ``root``, ``PER_FOLDER`` per folder."""
    for first in range(0, count, PER_FOLDER):
        folder = root / f"lang-{first // PER_FOLDER:03d}"
        folder.mkdir(parents=True)
        for i in range(first, min(first + PER_FOLDER, count)):
            os.link(sources[i % len(sources)], folder / f"video-{i:07d}.pose")


def measured(command: list[str], cwd: Path) -> dict:
    """Run ``command``; its wall time, peak memory (MB, the process and its waited-for children) and output. The
    command starts from a small C program (GNU time's `%M`, when installed), so the peak is the command's own and
    not this process's memory that a fork copies."""
    peak_file = cwd / ".peak-kb"
    time_program = GNU_TIME if sys.platform == "linux" and Path(GNU_TIME).exists() else None
    wrapped = [time_program, "-q", "-f", "%M", "-o", str(peak_file), *command] if time_program else command
    start = time.perf_counter()
    process = subprocess.Popen(wrapped, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "WANDB_MODE": "disabled"})
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{output[-4000:]}")
    peak_kb = int(peak_file.read_text().split()[-1]) if time_program else usage.ru_maxrss
    return {"seconds": seconds, "peak_mb": peak_kb / 1024, "output": output}


def snakemake(workdir: Path, *args: str) -> dict:
    return measured([str(SNAKEMAKE), "--snakefile", str(REPO / "workflow" / "Snakefile"),
                     "--profile", str(REPO / "profiles" / "local"), *args], workdir)


def job_counts(output: str) -> dict[str, int]:
    """The job-stats table of a Snakemake run or dry run: rule -> count (`all` and `total` left out)."""
    counts = {}
    for rule, count in re.findall(r"^(\w+)\s+(\d+)$", output, re.M):
        if rule not in ("all", "total", "count"):
            counts[rule] = int(count)
    return counts


def make_workdir(workdir: Path, poses: Path, shards: int) -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["input"].update(local_dir=str(poses), num_shards=shards)
    config["train"].update(TRAIN)
    config["render"].update(num_poses=1, max_frames=8, gif=False, metric_poses=2000)
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def listing_times(poses: Path) -> dict:
    """`scan_poses` (in a fresh process) against `find | wc -l` on the same tree, without and with a stat per file
    (the size and mtime that the lists record)."""
    start = time.perf_counter()
    found = subprocess.run(["find", str(poses), "-name", "*.pose"], capture_output=True, text=True)
    find_s = time.perf_counter() - start
    subprocess.run(["find", str(poses), "-name", "*.pose", "-printf", "%s %T@\n"], capture_output=True)
    find_stat_s = time.perf_counter() - start - find_s
    code = "import sys, time; from sign_vq.formats.shards import scan_poses; t = time.perf_counter(); " \
           "n = len(scan_poses(sys.argv[1]).files); print(n, time.perf_counter() - t)"
    scanned, scan_s = subprocess.run([sys.executable, "-c", code, str(poses)], capture_output=True, text=True,
                                     cwd=REPO, check=True).stdout.split()
    assert int(scanned) == len(found.stdout.splitlines()), scanned
    return {"files": int(scanned), "find_s": find_s, "find_stat_s": find_stat_s, "scan_s": float(scan_s)}


def measure_size(count: int, base: Path, sources: list[Path], shards: int) -> tuple[dict, Path]:
    poses, workdir = base / f"poses-{count}", base / f"work-{count}"
    build_tree(poses, count, sources)
    make_workdir(workdir, poses, shards)
    row = {"n": count, **listing_times(poses)}
    dry = snakemake(workdir, "--dry-run")
    row.update(dry_run_s=dry["seconds"], dry_run_mb=dry["peak_mb"], jobs=sum(job_counts(dry["output"]).values()))
    snakemake(workdir, "--until", "shard_list", "skipped_files")  # the lists a job process reads
    parse = snakemake(workdir, "--target-jobs", "normalize:shard=000", "--allowed-rules", "normalize", "--mode",
                      "remote", "--force", "--nolock", "--cores", "1", "--dry-run")
    row.update(job_parse_s=parse["seconds"], job_parse_mb=parse["peak_mb"])
    return row, workdir


def stage_peaks(workdir: Path) -> dict[str, dict]:
    """Per stage: the largest max_rss (MB) and the summed seconds of its jobs, from Snakemake's benchmark files."""
    peaks: dict[str, dict] = {}
    for tsv in sorted((workdir / "results" / "benchmarks").rglob("*.tsv")):
        stage = tsv.parent.name if tsv.parent.name in STAGES else tsv.stem
        for row in csv.DictReader(tsv.open(), delimiter="\t"):
            entry = peaks.setdefault(stage, {"jobs": 0, "max_rss_mb": 0.0, "seconds": 0.0})
            entry["jobs"] += 1
            entry["max_rss_mb"] = max(entry["max_rss_mb"], float(row["max_rss"]) if row["max_rss"] != "-" else 0.0)
            entry["seconds"] += float(row["s"])
    return peaks


def full_run(workdir: Path, poses: Path) -> dict:
    """The whole workflow for real, a rerun with nothing to do, a rerun after one file is rewritten."""
    run = snakemake(workdir)
    idle = snakemake(workdir)
    assert "Nothing to be done" in idle["output"], idle["output"][-2000:]
    target = next(poses.rglob("*.pose"))
    data = bytearray(target.read_bytes())
    data[-1] ^= 1  # same name and size, other bytes; a new file, so its hard links keep theirs
    target.unlink()
    target.write_bytes(bytes(data))
    changed = snakemake(workdir)
    counts = job_counts(changed["output"])
    assert counts.get("normalize") == 1, counts
    views = {flag: snakemake(workdir, f"--{flag}") for flag in ("summary", "detailed-summary")}
    views["report"] = snakemake(workdir, "--report", "results/report.zip")
    return {"run_s": run["seconds"], "stages": stage_peaks(workdir), "nothing_to_do_s": idle["seconds"],
            "nothing_to_do_mb": idle["peak_mb"], "one_changed_s": changed["seconds"], "one_changed_jobs": counts,
            "views": {flag: {"seconds": v["seconds"], "peak_mb": v["peak_mb"]} for flag, v in views.items()}}


def report(rows: list[dict], run: dict | None) -> None:
    print(f"{'files':>8} {'find s':>7} {'find+stat s':>12} {'scan s':>7} {'dry run s':>10} {'dry run MB':>11} {'jobs':>5} "
          f"{'job parse s':>12} {'job parse MB':>13}")
    for r in rows:
        print(f"{r['n']:>8} {r['find_s']:>7.2f} {r['find_stat_s']:>12.2f} {r['scan_s']:>7.2f} {r['dry_run_s']:>10.1f} {r['dry_run_mb']:>11.0f} "
              f"{r['jobs']:>5} {r['job_parse_s']:>12.2f} {r['job_parse_mb']:>13.0f}")
    if len(rows) > 1:
        print(f"dry run {rows[-1]['n']} / {rows[0]['n']} files: {rows[-1]['dry_run_s'] / rows[0]['dry_run_s']:.2f}x "
              f"time, {rows[-1]['dry_run_mb'] / rows[0]['dry_run_mb']:.2f}x memory")
    if run:
        print(f"\nwhole workflow on {rows[-1]['n']} files: {run['run_s']:.0f} s")
        for stage, entry in run["stages"].items():
            print(f"  {stage:<10} {entry['jobs']:>4} jobs  {entry['seconds']:>8.1f} s  peak {entry['max_rss_mb']:>6.0f} MB")
        print(f"rerun, nothing to do: {run['nothing_to_do_s']:.1f} s, {run['nothing_to_do_mb']:.0f} MB")
        print(f"rerun after one file rewritten: {run['one_changed_s']:.1f} s, jobs {run['one_changed_jobs']}")
        for flag, view in run["views"].items():
            print(f"--{flag}: {view['seconds']:.1f} s, {view['peak_mb']:.0f} MB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="numbers of pose files, comma-separated")
    parser.add_argument("--shards", type=int, default=256)
    parser.add_argument("--no-run", dest="run", action="store_false", help="dry runs and parses only")
    parser.add_argument("--workdir", type=Path, help="keep the trees here (default: a temporary folder)")
    parser.add_argument("--output", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        base = Path(folder)
        sources = tiny_poses(base / "sources")
        rows, workdir = [], None
        for count in sizes:
            row, workdir = measure_size(count, base, sources, args.shards)
            rows.append(row)
            print(json.dumps(row), flush=True)
        run = full_run(workdir, base / f"poses-{sizes[-1]}") if args.run and workdir else None
        report(rows, run)
        if args.output:
            args.output.write_text(json.dumps({"sizes": rows, "run": run}, indent=1))
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

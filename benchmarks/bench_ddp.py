"""Multi-process training (DDP on CPU, gloo) against one process: real frames/s and scaling efficiency.

Runs `sign-vq train` itself (Lightning, FSQ, the step sampler sharded by rank) on the fingerspelling files with one
and with two processes, each process with one torch thread and the same per-process batch, side by side:

    python -m benchmarks ddp
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks import corpus
from sign_vq.config import train_config
from sign_vq.dataset.archive import build_archive
from sign_vq.dataset.normalize import normalize_shard
from sign_vq.formats.statistics import merge_shards, write_stats
from sign_vq.training.data import PoseDataModule

TRAIN = {
    "batch_size": 8, "max_frames": 128, "max_steps": 150, "warmup_steps": 10, "checkpoint_every": 1000,
    "val_every": 1000, "log_every": 150, "accelerator": "cpu", "wandb": {"mode": "disabled"},
    "model": {"encoder_layers": 2, "decoder_layers": 2},
}
RATE = re.compile(r"step \d+/\d+ loss \S+ ([\d.]+) steps/s")


def prepare(work: Path) -> tuple[Path, Path]:
    data = corpus()
    files = sorted((data / "fingerspelling").rglob("*.pose"))
    normalize_shard(files, work / "shard.zip", root=data)
    write_stats(merge_shards([work / "shard.zip"]), work / "stats.json")
    build_archive([work / "shard.zip"], work / "archive.zip", val_fraction=0.05)
    return work / "archive.zip", work / "stats.json"


def frames_per_sample(archive: Path, samples: int = 400) -> float:
    """Mean real (unpadded) frames of a training sample: the same sample stream for any number of processes."""
    config = train_config({**TRAIN, "max_steps": samples // TRAIN["batch_size"]})
    data = PoseDataModule(archive, config)
    data.trainer = None
    real = sum(int((~batch["padding"]).sum()) for batch in data.train_dataloader())
    return real / samples


def steps_per_second(work: Path, archive: Path, stats: Path, devices: int) -> float:
    config = work / f"devices-{devices}.yaml"
    config.write_text(yaml.safe_dump({"train": {**TRAIN, "devices": devices}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "sign_vq.cli", "train", "--config", str(config), "--archive", str(archive),
               "--stats", str(stats), "--output", str(work / f"run-{devices}")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return float(RATE.findall(result.stderr)[-1])  # from the start of training: no start-up, no final save


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        archive, stats = prepare(work)
        per_sample = frames_per_sample(archive)
        rows = []
        for devices in (1, 2):
            rate = steps_per_second(work, archive, stats, devices)
            frames = rate * TRAIN["batch_size"] * devices * per_sample
            rows.append((devices, rate, frames))
    base = rows[0][2]
    print(f"batch {TRAIN['batch_size']} per process, {per_sample:.1f} real frames per sample, "
          f"{os.cpu_count()} CPUs, 1 torch thread per process")
    print(f"{'processes':>9} {'steps/s':>8} {'real frames/s':>14} {'speed-up':>9} {'efficiency':>11}")
    for devices, rate, frames in rows:
        print(f"{devices:>9} {rate:>8.2f} {frames:>14,.0f} {frames / base:>8.2f}x {frames / base / devices:>10.0%}")


if __name__ == "__main__":
    main()

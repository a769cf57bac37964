"""Training benchmark: throughput in real (unpadded) frames/s, padding fraction, and peak RSS of the data path.

Same configuration as upstream's smallest run (batch 2, 2 transformer layers), on every real fingerspelling file.

    python -m benchmarks.bench_train
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import corpus
from sign_vq.config import train_config
from sign_vq.dataset.archive import build_archive
from sign_vq.dataset.normalize import normalize_shard
from sign_vq.formats.statistics import merge_shards
from sign_vq.model.loss import part_weighted_mse
from sign_vq.model.network import PoseFSQAutoencoder
from sign_vq.training.data import PoseDataModule

CONFIG = {"batch_size": 2, "max_frames": 128, "model": {"encoder_layers": 2, "decoder_layers": 2}}
STEPS = 150

# Runs in a fresh process so its peak RSS is the data path's alone.
DATA_PATH_PROBE = """
import json, os, resource, sys
from sign_vq.training.data import PoseDataModule
def rss_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
config = json.loads(sys.argv[2])
data = PoseDataModule(sys.argv[1], config)
data.trainer = None
frames = 0
for i, batch in enumerate(data.train_dataloader()):
    frames += int((~batch["padding"]).sum())
    if i == 100:
        early = rss_mb()
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"frames": frames, "rss_mb": own / 1024, "worker_rss_mb": children / 1024,
                  "rss_100_mb": early, "rss_end_mb": rss_mb()}))
"""


def build(work: Path) -> tuple[Path, Path]:
    data = corpus()
    files = sorted((data / "fingerspelling").rglob("*.pose"))
    normalize_shard(files, work / "shard.zip", root=data)
    build_archive([work / "shard.zip"], work / "archive.zip", val_fraction=0.05)
    return work / "archive.zip", work / "shard.zip"


def throughput(archive: Path, stats_shard: Path) -> dict:
    config = train_config({**CONFIG, "max_steps": STEPS})
    data = PoseDataModule(archive, config)
    stats = merge_shards([stats_shard])
    torch.manual_seed(0)
    model = PoseFSQAutoencoder(config.model, config.max_frames, stats.mean, stats.std)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    real = padded = 0
    batches = list(data.train_dataloader())
    start = time.perf_counter()
    for batch in batches:
        observed = batch["observed"] & ~batch["padding"][..., None]
        recon, _ = model(batch["poses"], observed, batch["padding"])
        loss = part_weighted_mse(recon, batch["poses"], observed)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        real += int((~batch["padding"]).sum())
        padded += int(batch["padding"].sum())
    seconds = time.perf_counter() - start
    return {
        "steps": len(batches),
        "seconds": seconds,
        "steps_per_s": len(batches) / seconds,
        "real_frames_per_s": real / seconds,
        "padding_fraction": padded / (real + padded),
        "threads": torch.get_num_threads(),
    }


def data_path_rss(archive: Path, workers: int) -> dict:
    config = train_config({**CONFIG, "max_steps": 2000, "num_workers": workers})
    out = subprocess.run(
        [sys.executable, "-c", DATA_PATH_PROBE, str(archive), json.dumps(config)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        archive, shard = build(Path(tmp))
        size_mb = archive.stat().st_size / 2**20
        result = throughput(archive, shard)
        print(f"\ntrain (batch 2, 2+2 layers, d_model 128, {result['threads']} threads): "
              f"{result['steps_per_s']:.1f} steps/s, {result['real_frames_per_s']:.0f} real frames/s, "
              f"padding {result['padding_fraction']:.1%} of frames")
        for workers in (0, 2):
            rss = data_path_rss(archive, workers)
            print(f"data path, {workers} workers, 2000 batches ({rss['frames']} frames): peak RSS main "
                  f"{rss['rss_mb']:.0f} MB, largest worker {rss['worker_rss_mb']:.0f} MB; main RSS after 100 batches "
                  f"{rss['rss_100_mb']:.0f} MB -> after 2000 {rss['rss_end_mb']:.0f} MB (archive {size_mb:.1f} MB)")


if __name__ == "__main__":
    main()

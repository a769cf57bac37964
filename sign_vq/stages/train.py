"""Training: `sign-vq train --config CONFIG --archive ARCHIVE --stats STATS --output DIR`.

One process per device (``train.devices`` × ``train.num_nodes``; under Slurm one task each, started by ``srun``);
each rank trains on its own share of every step's samples, so the global batch is ``batch_size × devices ×
num_nodes``. ``DIR/checkpoints/last.ckpt`` is written every ``checkpoint_every`` steps and on SIGTERM/SIGUSR1/SIGINT;
a run that stops before ``max_steps`` exits 3 and the same command resumes it (see :mod:`sign_vq.training.runs` for when a
changed config or new data starts a new run instead, and for the lock that keeps a second run out of ``DIR``). Rank
zero writes ``DIR/model.ckpt``, ``DIR/metrics.csv``, ``DIR/curves.png`` and the W&B run (offline by default, its id
kept in ``DIR/wandb_run_id``).
"""

from __future__ import annotations

import argparse

from sign_vq.config import load_config
from sign_vq.training.trainer import train


def run(args: argparse.Namespace) -> int:
    return train(load_config(args.config), args.archive, args.stats, args.output)


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("train")

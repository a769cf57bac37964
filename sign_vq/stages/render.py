"""Validation render: `sign-vq render --model MODEL --archive ARCHIVE --output DIR [--num-poses N] [--max-frames M]`.

Writes exactly ``DIR/metrics.json``, ``DIR/metrics.csv`` (its table), ``DIR/metrics.png`` and ``DIR/videos/``
(``<safe id>.mp4`` and ``.gif`` per rendered pose: original left, reconstruction right, at the pose's own fps, in its
original coordinates via the archive entry's ``center``/``scale``; the reconstruction is drawn at the points the
original has). Metrics cover the whole validation split (``split == 'val'``; the train split when there is none),
each pose reconstructed whole (see :mod:`sign_vq.evaluation.reconstruction`; formulas in :mod:`sign_vq.evaluation.metrics`).
:class:`sign_vq.training.callbacks.RenderCallback` runs the same during training.
"""

from __future__ import annotations

import argparse

from sign_vq.config import RenderConfig
from sign_vq.errors import UserError
from sign_vq.evaluation import videos  # noqa: F401  the render extra's video libraries: missing ones fail here, first
from sign_vq.evaluation.render import render
from sign_vq.formats.posezip import PoseZip
from sign_vq.model.checkpoint import load_on


def run(args: argparse.Namespace) -> int:
    if args.num_poses < 0 or args.max_frames < 1 or args.metric_poses < 0:
        raise UserError("--num-poses and --metric-poses must be >= 0, --max-frames >= 1")
    model = load_on(args.model, args.device)
    render(
        model, PoseZip(args.archive), args.output,
        RenderConfig(num_poses=args.num_poses, metric_poses=args.metric_poses, max_frames=args.max_frames,
                     gif=not args.no_gif),
    )
    return 0


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("render")

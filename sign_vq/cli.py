"""`sign-vq <stage>`: one command-line entry point, one subcommand per stage module (imported only when it runs)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sign_vq import __version__
from sign_vq.errors import UserError

# subcommand -> (module that defines `add_arguments(parser, stage)` and `run(args) -> int | None`, summary)
STAGES = {
    "sync": ("sign_vq.sync", "mirror a GCS bucket and write the shard lists"),
    "normalize": ("sign_vq.normalize", "normalize the .pose files of one shard into a pose zip with point statistics"),
    "stats": ("sign_vq.stats", "merge the per-point statistics of normalize shards into the dataset mean/std"),
    "archive": ("sign_vq.archive", "join normalize shards into the training archive with a hash-based train/val split"),
    "train": ("sign_vq.train", "train the FSQ autoencoder (resumes from DIR/checkpoints/last.ckpt)"),
    "render": ("sign_vq.render", "render validation videos (original | reconstruction) and reconstruction metrics"),
    "encode": ("sign_vq.inference", "encode poses (.pose files, folders, shards, archives) into FSQ codes"),
    "decode": ("sign_vq.inference", "decode codes (.npy files or a codes corpus) into .pose files"),
    "reconstruct": ("sign_vq.inference", "encode and decode .pose files, back in each input's own coordinates"),
    "repair": ("sign_vq.inference", "fill the missing keypoints of .pose files from their reconstruction"),
}


def _global_flags(parser: argparse.ArgumentParser, default: object = False) -> None:
    """Flags accepted before and after the stage (after it, an absent flag keeps the value given before)."""
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")


def build_parser(stage: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only ``stage``'s module is imported (none for the top-level help)."""
    parser = argparse.ArgumentParser(prog="sign-vq", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_flags(parser)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (module_name, summary) in STAGES.items():
        if name != stage:
            sub.add_parser(name, help=summary, add_help=False)
            continue
        stage_parser = sub.add_parser(name, help=summary, description=summary)
        _global_flags(stage_parser, default=argparse.SUPPRESS)
        module = importlib.import_module(module_name)
        module.add_arguments(stage_parser, name)
        stage_parser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen stage; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    stage = next((a for a in argv if a in STAGES), None)
    args = build_parser(stage).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except UserError as error:
        logging.getLogger("sign_vq").error("%s", error)
        return 2


def run_module(stage: str) -> None:
    """Entry for `python -m sign_vq.<module>`: the same as `sign-vq <stage> ...`."""
    sys.exit(main([stage, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())

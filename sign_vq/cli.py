"""`sign-vq <stage>`: one command-line entry point, one subcommand per stage module (imported only when it runs).
A stage marked [needs the X extra] needs `pip install 'sign-vq[X]'` beyond the core install."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from sign_vq import __version__
from sign_vq.errors import UserError

LIGHT_ARGUMENTS = "sign_vq.arguments"  # the flags of the stages whose modules load torch, Lightning or an extra


@dataclass(frozen=True)
class Stage:
    """A subcommand: ``module`` defines `run(args) -> int | None` (imported only to run); ``arguments`` (default:
    ``module``) defines `add_arguments(parser, stage)` and imports neither torch nor Lightning; ``extra`` is the
    optional dependency set (`pip install 'sign-vq[extra]'`) the stage needs beyond the core install."""

    module: str
    summary: str
    arguments: str | None = None
    extra: str | None = None

    def help(self) -> str:
        return f"{self.summary} [needs the {self.extra} extra]" if self.extra else self.summary


STAGES = {
    "sync": Stage("sign_vq.stages.sync", "mirror a GCS bucket and write the shard lists", LIGHT_ARGUMENTS, "sync"),
    "normalize": Stage("sign_vq.stages.normalize", "normalize .pose files (or folders of them) into one shard: a pose zip "
                       "with point statistics"),
    "stats": Stage("sign_vq.stages.stats", "merge the per-point statistics of normalize shards into the dataset mean/std"),
    "rejected": Stage("sign_vq.stages.rejected", "merge the entries the listing skipped and the files normalize rejected "
                      "into one table (file, stage, reason)"),
    "archive": Stage("sign_vq.stages.archive", "join normalize shards into the training archive with a hash-based train/val "
                     "split"),
    "train": Stage("sign_vq.stages.train", "train the FSQ autoencoder (resumes from DIR/checkpoints/last.ckpt)",
                   LIGHT_ARGUMENTS, "train"),
    "render": Stage("sign_vq.stages.render", "render validation videos (original | reconstruction) and reconstruction "
                    "metrics", LIGHT_ARGUMENTS, "render"),
    "encode": Stage("sign_vq.stages.inference", "encode poses (.pose files, folders, shards, archives) into FSQ codes",
                    LIGHT_ARGUMENTS),
    "decode": Stage("sign_vq.stages.inference", "decode codes (.npy files or a codes corpus) into .pose files",
                    LIGHT_ARGUMENTS),
    "reconstruct": Stage("sign_vq.stages.inference", "encode and decode .pose files, back in each input's own coordinates",
                         LIGHT_ARGUMENTS),
    "repair": Stage("sign_vq.stages.inference", "fill the missing keypoints of .pose files from their reconstruction",
                    LIGHT_ARGUMENTS),
    "export": Stage("sign_vq.stages.export", "write a model as a Hugging Face hub model folder (model.safetensors, "
                    "config.json, README.md)", LIGHT_ARGUMENTS),
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
    for name, spec in STAGES.items():
        if name != stage:
            sub.add_parser(name, help=spec.help(), add_help=False)
            continue
        stage_parser = sub.add_parser(name, help=spec.help(), description=spec.help())
        _global_flags(stage_parser, default=argparse.SUPPRESS)
        importlib.import_module(spec.arguments or spec.module).add_arguments(stage_parser, name)
    return parser


def run_stage(args: argparse.Namespace) -> int | None:
    """Import the stage's module and run it; a module of the stage's extra that is not installed is a UserError
    naming the extra."""
    spec = STAGES[args.stage]
    try:
        return importlib.import_module(spec.module).run(args)
    except ModuleNotFoundError as error:
        if spec.extra is None or (error.name or "sign_vq").partition(".")[0] == "sign_vq":
            raise
        raise UserError(f"sign-vq {args.stage}: needs the {spec.extra} extra (no module {error.name!r}): "
                        f"pip install 'sign-vq[{spec.extra}]'") from None


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen stage; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    stage = next((a for a in argv if a in STAGES), None)
    args = build_parser(stage).parse_args(argv)
    return run_logged(lambda: run_stage(args), args.verbose)


def run_logged(run: Callable[[], int | None], verbose: bool) -> int:
    """``run()`` with logging set up; returns its exit status, 2 (and one logged line) for a UserError."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(run() or 0)
    except UserError as error:
        logging.getLogger("sign_vq").error("%s", error)
        return 2


def run_module(stage: str) -> None:
    """Entry for `python -m sign_vq.stages.<module>`: the same as `sign-vq <stage> ...`."""
    sys.exit(main([stage, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())

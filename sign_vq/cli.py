"""`sign-vq <stage>`: one command-line entry point, one subcommand per stage module."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sign_vq.errors import UserError

# subcommand -> module that defines `add_arguments(parser)` and `run(args) -> int | None`
STAGES = {
    "sync": "sign_vq.sync",
    "normalize": "sign_vq.normalize",
    "stats": "sign_vq.stats",
    "archive": "sign_vq.archive",
    "train": "sign_vq.train",
    "render": "sign_vq.render",
    "encode": "sign_vq.inference",
    "decode": "sign_vq.inference",
    "reconstruct": "sign_vq.inference",
    "repair": "sign_vq.inference",
}


def build_parser(stage: str | None = None) -> argparse.ArgumentParser:
    """The argument parser for all stages, or only ``stage`` (imports just that module)."""
    parser = argparse.ArgumentParser(prog="sign-vq", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, module_name in STAGES.items():
        if stage is not None and name != stage:
            sub.add_parser(name, add_help=False)
            continue
        module = importlib.import_module(module_name)
        stage_parser = sub.add_parser(name, help=module.HELP.get(name) if isinstance(module.HELP, dict) else module.HELP)
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

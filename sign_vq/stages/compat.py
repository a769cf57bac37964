"""The original sign-vq's commands, with its flags, as thin shells over `sign-vq encode` and the decoder::

    poses_to_codes --data DIR|ZIP --output codes.csv --model M      # = sign-vq encode --model M --output codes.csv DIR
    codes_to_poses --codes "1 2 3 ..." --output x.pose --model M [--fps 25]
    codes_to_poses --codes codes.txt --output DIR --model M          # one pose's codes a line -> DIR/<line>.pose

Codes are frame-major, ``num_codebooks`` values a frame, as in the ``codes`` column of the corpus. ``--model`` is
required: the original's default (the hub's ``sign/mediapipe-vq``) is a model of another design that this package
cannot read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sign_vq.arguments import add_model_arguments
from sign_vq.cli import main, run_logged
from sign_vq.errors import UserError


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_model_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def poses_to_codes(argv: list[str] | None = None) -> int:
    """`poses_to_codes`: the codes corpus (``file,fps,length,codes``) of a folder of poses or a zip."""
    parser = _parser("poses_to_codes", "encode poses into a codes corpus (CSV: file,fps,length,codes)")
    parser.add_argument("--data", required=True,
                        help="a folder of .pose files (searched recursively), a zip of .pose files, a shard or archive")
    parser.add_argument("--output", required=True, help="the codes corpus to write (CSV)")
    args = parser.parse_args(argv)
    verbose = ["--verbose"] if args.verbose else []
    return main([*verbose, "encode", "--model", str(args.model), "--device", args.device, "--output", args.output,
                 args.data])


def code_lines(codes: str) -> tuple[list[tuple[str, str]], bool]:
    """(name, codes text) of each pose in ``--codes`` (a file: one a non-empty line; else the codes themselves), and
    whether they came from a file."""
    path = Path(codes)
    try:
        is_file = path.is_file()
    except OSError:  # e.g. longer than a file name can be: the codes themselves
        is_file = False
    if not is_file:
        return [("--codes", codes)], False
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read the codes ({error}); expected a text file, one pose's codes a line")
    found = [(f"{path}:{number}", line) for number, line in enumerate(lines, 1) if line.strip()]
    if not found:
        raise UserError(f"{path}: no codes in this file; expected one pose's codes a line")
    return found, True


def parse_codes(text: str, num_codebooks: int, name: str) -> np.ndarray:
    """Space-separated frame-major codes as frames x ``num_codebooks`` integers, or a UserError naming ``name``."""
    try:
        flat = np.array(text.split(), dtype=np.int64)
    except (ValueError, OverflowError):
        raise UserError(f"{name}: codes must be integers separated by spaces (as in a corpus's codes column)") from None
    if not len(flat) or len(flat) % num_codebooks:
        raise UserError(f"{name}: {len(flat)} codes do not make whole frames of this model's {num_codebooks} codes")
    return flat.reshape(-1, num_codebooks)


def _write_poses(args: argparse.Namespace) -> int:
    from sign_vq.api import check_fps, placed_pose, write_pose  # torch: once the flags are known
    from sign_vq.model.checkpoint import load_on
    from sign_vq.model.codes import decode_arrays

    lines, from_file = code_lines(args.codes)
    output = Path(args.output)
    if from_file and output.exists() and not output.is_dir():
        raise UserError(f"--output {output}: not a folder; codes from a file go to a folder (one .pose a line)")
    if not from_file and output.is_dir():
        raise UserError(f"--output {output}: a folder; codes given directly go to one .pose file (name it)")
    fps = check_fps(args.fps, "--fps")
    model = load_on(args.model, args.device)
    arrays = [parse_codes(text, model.codes_per_frame, name) for name, text in lines]
    poses = decode_arrays(model, arrays, [name for name, _ in lines])
    targets = [output / f"{index}.pose" for index in range(len(poses))] if from_file else [output]
    for pose, target in zip(poses, targets):
        write_pose(placed_pose(pose, fps), target)
    return 0


def codes_to_poses(argv: list[str] | None = None) -> int:
    """`codes_to_poses`: `.pose` files from codes given directly or a file of them (one pose a line)."""
    parser = _parser("codes_to_poses", "decode codes into .pose files")
    parser.add_argument("--codes", required=True,
                        help='the codes ("1 2 3 ...") or a text file of them, one pose a line')
    parser.add_argument("--output", required=True, help="the .pose file (codes given directly) or a folder (a file)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate of the poses written (default: 25)")
    args = parser.parse_args(argv)
    return run_logged(lambda: _write_poses(args), args.verbose)

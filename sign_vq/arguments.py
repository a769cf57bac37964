"""The flags of the stages whose modules load torch, Lightning or an extra (sync, train, render, encode, decode,
reconstruct, repair, export), kept apart from them: `sign-vq <stage> --help` imports this module, never torch or
Lightning, and works on a core install. The lighter stages (normalize, stats, archive) declare their own flags."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from sign_vq.config import default

MODEL_HELP = "model.ckpt, a training folder, a model folder (`sign-vq export`) or a hub org/name"


def add_model_arguments(parser: argparse.ArgumentParser, device: bool = True) -> None:
    """``--model`` (whatever :func:`sign_vq.load` reads) and, with ``device``, ``--device``: the flags of every
    command that runs a model (render, encode, decode, reconstruct, repair, export and the original's commands)."""
    parser.add_argument("--model", required=True, type=Path, help=MODEL_HELP)
    if device:
        parser.add_argument("--device", default="cpu", help="torch device (default: cpu; e.g. cuda, cuda:1)")


def _sync(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bucket", required=True, metavar="gs://BUCKET[/PREFIX]", help="bucket (and folder) to mirror")
    parser.add_argument("--output", type=Path, required=True, metavar="MIRROR_DIR", help="mirror folder")
    parser.add_argument("--lists", type=Path, required=True, metavar="LISTS_DIR", help="folder of shard lists")
    parser.add_argument("--shards", type=int, required=True, metavar="K", help="number of shard lists")
    parser.add_argument("--threads", type=int, default=default("input.threads"), metavar="N",
                        help="parallel downloads (default %(default)s)")
    parser.add_argument("--delete-removed", action="store_true",
                        help="delete mirrored files whose object was removed from the bucket (default: keep)")
    parser.add_argument("--anonymous", action="store_true", help="no credentials (public buckets)")
    parser.add_argument("--retries", type=int, default=5, metavar="N",
                        help="retries per object after a failure (default 5)")
    parser.add_argument("--retry-wait", type=float, default=0.5, metavar="SECONDS",
                        help="first wait before a retry; doubles each time (default 0.5)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS", help="per-request timeout (default 120)")
    parser.add_argument("--verify", action="store_true",
                        help="re-checksum local files even when the manifest says they are up to date")


def _train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config (its `train` section is used; defaults if omitted)")
    parser.add_argument("--archive", required=True, type=Path, help="training archive from `sign-vq archive`")
    parser.add_argument("--stats", required=True, type=Path, help="statistics from `sign-vq stats`")
    parser.add_argument("--output", required=True, type=Path, help="training folder (checkpoints, logs, model.ckpt)")


def _render(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--archive", required=True, type=Path, help="archive from `sign-vq archive`")
    parser.add_argument("--output", required=True, type=Path, help="folder for metrics.json, metrics.png, videos/")
    parser.add_argument("--num-poses", type=int, default=default("render.num_poses"),
                        help="validation poses rendered as videos (default %(default)s)")
    parser.add_argument("--max-frames", type=int, default=default("render.max_frames"),
                        help="frames per video at most (default %(default)s)")
    parser.add_argument("--no-gif", action="store_true", help="write mp4 videos only")
    parser.add_argument("--metric-poses", type=int, default=default("render.metric_poses"),
                        help="limit metrics to the first this many poses (0: all; default %(default)s)")


def _inference(parser: argparse.ArgumentParser, stage: str) -> None:
    add_model_arguments(parser)
    if stage in ("encode", "reconstruct"):
        parser.add_argument("--quantizers", type=int, metavar="K",
                            help="keep the first K codes of each frame (a model.quantizer: residual model; default: all)")
    if stage == "encode":
        parser.add_argument("--output", required=True, type=Path,
                            help="FILE.csv: one codes corpus (a row per pose); otherwise a folder of .npy per pose")
        parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                            help=".pose files, folders of them, shards or archives (.zip)")
    elif stage == "decode":
        parser.add_argument("--output", required=True, type=Path, help="output folder: one .pose per id")
        parser.add_argument("--fps", type=float, help="frame rate of poses decoded from .npy (a corpus has its own)")
        parser.add_argument("inputs", nargs="+", type=Path, metavar="CODES",
                            help=".npy files, folders of them, or codes corpora (.csv)")
    else:
        parser.add_argument("--output", required=True, type=Path, help="output folder (keeps input relative paths)")
        parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help=".pose files or folders of them")


def _export(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, device=False)
    parser.add_argument("--output", required=True, type=Path, help="the model folder to write (replaced if it is one)")
    parser.add_argument("--license", default="other", help="the model card's hub license id (default: other)")
    parser.add_argument("--data", help="what the model was trained on, for the model card (corpus, languages, size)")


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    """Declare ``stage``'s flags on ``parser``."""
    if stage in ("encode", "decode", "reconstruct", "repair"):
        _inference(parser, stage)
    else:
        {"sync": _sync, "train": _train, "render": _render, "export": _export}[stage](parser)


def number_in(
    low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """An argparse type: a number from ``low`` to ``high``, each bound included unless open; NaN is refused."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected one in {interval}") from None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):  # NaN is neither
            raise argparse.ArgumentTypeError(f"{text} is outside {interval}")
        return value

    return parse

"""Inference with a trained model: `sign-vq encode | decode | reconstruct | repair`, and the same as a Python API
(:func:`encode`, :func:`decode`; ``sign_vq.load/encode/decode``).

- ``encode``: codes of ``.pose`` files, folders, shards and archives: one codes corpus (``--output FILE.csv``, a row
  per pose, see :mod:`sign_vq.formats.corpus`) or one ``.npy`` per pose (integer codes, frames x codes per frame). A
  residual model (``model.quantizer: residual``) keeps the first k codes of a frame with ``--quantizers k`` (fewer
  bits, coarser poses); ``decode`` reads any 1 to all of them (codes per frame = the corpus' codes / length).
- ``decode``: one ``.pose`` per codes file or corpus row (canonical 178-point header). Codes carry no original
  coordinates, so the shoulder-normalized output is placed the way pose-format's ``normalize_pose_size`` does: a
  512 x 512 frame with the shoulder centre at (256, 256) and a shoulder width of 204.8 pixels
  (``(x + 1.25) * 204.8``).
- ``reconstruct``: a ``.pose`` with the input's frame count, fps and frame size, the 178 reduced points mapped back
  to the input's own coordinates (its shoulder centre and width); every point has confidence 1.
- ``repair``: the input's 178 reduced points as read (no wrist correction), observed points (finite confidence > 0)
  copied bit for bit with their confidence; only the missing points are filled from the reconstruction, with
  confidence :data:`FILLED_CONFIDENCE`.

Only the first person of a multi-person file is used. Poses longer than the model's ``max_frames``
are cut into equal windows of at most that many frames (a function of the frame count only, so
``decode(encode(x))`` equals the windowed reconstruction); windows of several poses share a forward pass
(:func:`windowed`). ``decode`` takes at most :data:`~sign_vq.formats.corpus.MAX_DECODE_FRAMES` frames at once. A folder
input keeps its relative paths under the output folder; a bad input is reported (naming the file) and skipped, and
the command then exits 2. Runs on CPU unless ``--device`` says otherwise; imports only the
core dependencies (never Lightning, W&B or video libraries).
"""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from sign_vq.api import check_fps, placed_pose, reconstruct_file, repair_file, write_pose
from sign_vq.errors import UserError
from sign_vq.fileio import atomic_open
from sign_vq.formats import corpus
from sign_vq.model.checkpoint import load_on
from sign_vq.model.codes import check_codes, decode_arrays, encode_arrays
from sign_vq.model.network import PoseFSQAutoencoder

log = logging.getLogger(__name__)
STAGES = ("encode", "decode", "reconstruct", "repair")


def collect_inputs(inputs: list[Path], suffix: str) -> list[tuple[Path, Path]]:
    """(file, relative output stem) for files and directories (searched recursively for ``*suffix``)."""
    found = [(path, Path(stem)) for item in inputs for path, stem in corpus.files_of(item, suffix)]
    seen: dict[Path, Path] = {}
    for path, stem in found:
        if stem in seen:
            raise UserError(f"{path}: its output name {stem} collides with that of {seen[stem]}; pass them separately")
        seen[stem] = path
    return found


def _model(args: argparse.Namespace) -> PoseFSQAutoencoder:
    return load_on(args.model, args.device)


def _read(model: PoseFSQAutoencoder, stage: str, item: corpus.Item) -> tuple:
    """An item's input: (data, mask, fps) of a pose to encode, or (checked codes, fps) to decode."""
    if stage == "encode":
        return item.read()
    codes, fps = item.read()
    return check_codes(model, codes, item.name), check_fps(fps, item.name)


def _run_batch(
    model: PoseFSQAutoencoder, stage: str, batch: list[corpus.Item], quantizers: int | None = None
) -> list[tuple[corpus.Item, object]]:
    """Each item with its result ((fps, codes) for encode, of a residual model's first ``quantizers`` codes when
    given; a Pose for decode) or its UserError."""
    done: list[tuple[corpus.Item, object]] = []
    ready: list[tuple[corpus.Item, tuple]] = []
    for item in batch:
        try:
            ready.append((item, _read(model, stage, item)))
        except UserError as error:
            done.append((item, error))
    try:
        if stage == "encode":
            codes = encode_arrays(model, [(data, mask) for _, (data, mask, _) in ready], quantizers)
            return done + [(item, (fps, c)) for (item, (_, _, fps)), c in zip(ready, codes)]
        poses = decode_arrays(model, [codes for _, (codes, _) in ready], [item.name for item, _ in ready])
        return done + [(item, placed_pose(p, fps)) for (item, (_, fps)), p in zip(ready, poses)]
    except UserError as error:
        return done + [(item, error) for item, _ in ready]


def _batched(
    model: PoseFSQAutoencoder, args: argparse.Namespace, errors: list[str]
) -> Iterator[tuple[corpus.Item, object]]:
    """(item, result) of every input of ``encode``/``decode`` that worked, streamed; failures go to ``errors``."""
    if args.stage == "encode":
        items, total = corpus.pose_items(args.inputs), corpus.count_poses(args.inputs)
    else:
        items, total = corpus.code_items(args.inputs, args.fps), None
    for batch in corpus.batches(items, total, args.stage):
        for item, result in _run_batch(model, args.stage, batch, getattr(args, "quantizers", None)):
            if isinstance(result, UserError):
                errors.append(str(result) if item.name in str(result) else f"{item.name}: {result}")
            else:
                yield item, result


def _write_batched(model: PoseFSQAutoencoder, args: argparse.Namespace, errors: list[str]) -> int:
    """Run encode/decode and write its outputs; returns how many were written."""
    results = _batched(model, args, errors)
    if args.stage == "encode" and args.output.suffix == ".csv":
        rows = ((item.id, fps, codes, item.split) for item, (fps, codes) in results)
        return corpus.write_corpus(args.output, rows, errors, corpus.has_splits(args.inputs))
    written: set[Path] = set()
    for item, result in results:
        pose_id = item.id
        try:
            target = corpus.output_path(args.output, pose_id, ".npy" if args.stage == "encode" else ".pose")
        except UserError as error:
            errors.append(str(error))
            continue
        if target in written:
            errors.append(corpus.twice(pose_id))
            continue
        written.add(target)
        if args.stage == "encode":
            fps, codes = result
            dtype = np.int32 if model.codebook_size <= np.iinfo(np.int32).max else np.int64
            with atomic_open(target, "wb") as handle:
                np.save(handle, codes.astype(dtype), allow_pickle=False)
        else:
            write_pose(result, target)
    return len(written)


def _write_per_file(model: PoseFSQAutoencoder, args: argparse.Namespace, errors: list[str]) -> int:
    """Run reconstruct/repair file by file; returns how many were written."""
    files = collect_inputs(args.inputs, ".pose")
    process = functools.partial(reconstruct_file, quantizers=args.quantizers) if args.stage == "reconstruct" else repair_file
    for path, stem in files:
        try:
            write_pose(process(model, path), args.output / stem.with_suffix(".pose"))
        except UserError as error:
            errors.append(str(error) if str(path) in str(error) else f"{path}: {error}")
    return len(files) - len(errors)


def prepare_output(output: Path, corpus_file: bool) -> None:
    """Make the output folder (or the corpus file's folder); a file or folder in the way is a UserError."""
    if corpus_file and output.is_dir():
        raise UserError(f"--output {output}: a folder; name a FILE.csv for the codes corpus")
    try:
        (output.parent if corpus_file else output).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--output {output}: cannot make the output folder ({error.strerror}: a file is in the way); "
                        "name a folder") from None


def run(args: argparse.Namespace) -> int:
    model = _model(args)
    model.kept(getattr(args, "quantizers", None))  # one error before any input is read
    errors: list[str] = []
    batched = args.stage in ("encode", "decode")
    prepare_output(args.output, args.stage == "encode" and args.output.suffix == ".csv")
    written = (_write_batched if batched else _write_per_file)(model, args, errors)
    log.info("%s: %d written to %s", args.stage, written, args.output)
    if errors:
        if len(errors) == 1:
            raise UserError(errors[0])
        for error in errors:
            log.error("%s", error)
        raise UserError(f"{len(errors)} inputs failed (first: {errors[0]})")
    return 0


if __name__ == "__main__":
    import sys

    from sign_vq.cli import main, run_module

    if len(sys.argv) > 1 and sys.argv[1] in STAGES:  # python -m sign_vq.stages.inference encode|decode|reconstruct|repair ...
        run_module(sys.argv.pop(1))
    sys.exit(main(sys.argv[1:]))

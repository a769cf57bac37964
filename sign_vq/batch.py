"""Many inputs at once, behind `sign-vq encode | decode | reconstruct | repair`: encode and decode in batches whose
windows share forward passes (a codes corpus or one file per input), reconstruct and repair file by file; a bad
input is recorded (naming it) and skipped, the others written."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from sign_vq.api import check_fps, placed_pose, reconstruct_file, repair_file, write_pose
from sign_vq.errors import UserError
from sign_vq.fileio import atomic_open
from sign_vq.formats import corpus
from sign_vq.model.codes import check_codes, decode_arrays, encode_arrays
from sign_vq.model.network import PoseFSQAutoencoder


@dataclass(frozen=True)
class Job:
    """One inference command: its stage, inputs and output, the codes' frame rate (decode; None: as each input
    says) and how many codes a frame keeps (encode/reconstruct of a residual model; None: all)."""

    stage: str
    inputs: list[Path]
    output: Path
    fps: float | None = None
    quantizers: int | None = None


def run_job(model: PoseFSQAutoencoder, job: Job, errors: list[str]) -> int:
    """Run ``job`` and write its outputs; returns how many were written, failures go to ``errors``."""
    prepare_output(job.output, job.stage == "encode" and job.output.suffix == ".csv")
    return (write_batched if job.stage in ("encode", "decode") else write_per_file)(model, job, errors)


def collect_inputs(inputs: list[Path], suffix: str) -> list[tuple[Path, Path]]:
    """(file, relative output stem) for files and directories (searched recursively for ``*suffix``)."""
    found = [(path, Path(stem)) for item in inputs for path, stem in corpus.files_of(item, suffix)]
    seen: dict[Path, Path] = {}
    for path, stem in found:
        if stem in seen:
            raise UserError(f"{path}: its output name {stem} collides with that of {seen[stem]}; pass them separately")
        seen[stem] = path
    return found


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
    model: PoseFSQAutoencoder, job: Job, errors: list[str]
) -> Iterator[tuple[corpus.Item, object]]:
    """(item, result) of every input of ``encode``/``decode`` that worked, streamed; failures go to ``errors``."""
    if job.stage == "encode":
        items, total = corpus.pose_items(job.inputs), corpus.count_poses(job.inputs)
    else:
        items, total = corpus.code_items(job.inputs, job.fps), None
    for batch in corpus.batches(items, total, job.stage):
        for item, result in _run_batch(model, job.stage, batch, job.quantizers):
            if isinstance(result, UserError):
                errors.append(str(result) if item.name in str(result) else f"{item.name}: {result}")
            else:
                yield item, result


def write_batched(model: PoseFSQAutoencoder, job: Job, errors: list[str]) -> int:
    """Run encode/decode and write its outputs; returns how many were written."""
    results = _batched(model, job, errors)
    if job.stage == "encode" and job.output.suffix == ".csv":
        rows = ((item.id, fps, codes, item.split) for item, (fps, codes) in results)
        return corpus.write_corpus(job.output, rows, errors, corpus.has_splits(job.inputs))
    written: set[Path] = set()
    for item, result in results:
        pose_id = item.id
        try:
            target = corpus.output_path(job.output, pose_id, ".npy" if job.stage == "encode" else ".pose")
        except UserError as error:
            errors.append(str(error))
            continue
        if target in written:
            errors.append(corpus.twice(pose_id))
            continue
        written.add(target)
        if job.stage == "encode":
            fps, codes = result
            dtype = np.int32 if model.codebook_size <= np.iinfo(np.int32).max else np.int64
            with atomic_open(target, "wb") as handle:
                np.save(handle, codes.astype(dtype), allow_pickle=False)
        else:
            write_pose(result, target)
    return len(written)


def write_per_file(model: PoseFSQAutoencoder, job: Job, errors: list[str]) -> int:
    """Run reconstruct/repair file by file; returns how many were written."""
    files = collect_inputs(job.inputs, ".pose")
    process = functools.partial(reconstruct_file, quantizers=job.quantizers) if job.stage == "reconstruct" else repair_file
    for path, stem in files:
        try:
            write_pose(process(model, path), job.output / stem.with_suffix(".pose"))
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

"""Inference with a trained model: `sign-vq encode | decode | reconstruct | repair`, and the same as a Python API
(:func:`encode`, :func:`decode`; ``sign_vq.load/encode/decode``).

- ``encode``: codes of ``.pose`` files, folders, shards and archives: one codes corpus (``--output FILE.csv``, a row
  per pose, see :mod:`sign_vq.corpus`) or one ``.npy`` per pose (integer codes, frames x codes per frame). A
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
(:func:`windowed`). ``decode`` takes at most :data:`~sign_vq.corpus.MAX_DECODE_FRAMES` frames at once. A folder
input keeps its relative paths under the output folder; a bad input is reported (naming the file) and skipped, and
the command then exits 2. Runs on CPU unless ``--device`` says otherwise; imports only the
core dependencies (never Lightning, W&B or video libraries).
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import numpy as np
import torch
from pose_format import Pose

from sign_vq import corpus, preprocess, skeleton
from sign_vq.errors import UserError
from sign_vq.fileio import atomic_open, read_regular
from sign_vq.model import PoseFSQAutoencoder, load_on

STAGES = ("encode", "decode", "reconstruct", "repair")
log = logging.getLogger(__name__)

FILLED_CONFIDENCE = 0.5  # confidence written for keypoints that `repair` filled in
DECODE_FRAME = 512  # pixels: decode output frame (pose-format's normalize_pose_size convention)
DECODE_SHIFT = 1.25  # shoulder widths from the shoulder centre to the frame's edge
WINDOW_BATCH = 64  # windows per forward pass
PAD_STEP = 16  # windows are padded to a multiple of this many frames (see windowed)
MAX_FPS = 10_000.0  # frame rates decode writes (a .pose stores fps as float32)


# ---------------------------------------------------------------------------------------------------------- windows


def window_bounds(frames: int, max_frames: int) -> list[tuple[int, int]]:
    """Equal consecutive windows ``[start, end)`` of at most ``max_frames`` covering ``frames`` frames."""
    if frames <= 0:
        return []
    count = math.ceil(frames / max_frames)
    edges = np.linspace(0, frames, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def collate(
    windows: list[tuple[np.ndarray, ...]], device: torch.device, length: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Pad windows (tuples of arrays sharing their first axis, frames) to ``length`` frames: one batch tensor
    (B x length x ...) per array, and ``padding`` (B x length, True on padded frames)."""
    padding = np.ones((len(windows), length), dtype=bool)
    batches = [np.zeros((len(windows), length, *array.shape[1:]), dtype=array.dtype) for array in windows[0]]
    for i, window in enumerate(windows):
        padding[i, : len(window[0])] = False
        for batch, array in zip(batches, window):
            batch[i, : len(array)] = array
    return [torch.from_numpy(batch).to(device) for batch in batches], torch.from_numpy(padding).to(device)


@torch.no_grad()
def windowed(
    model: PoseFSQAutoencoder, items: list[tuple[np.ndarray, ...]], step: Callable[..., tuple[torch.Tensor, ...]]
) -> list[tuple[np.ndarray, ...]]:
    """The one windowed-inference loop: cut every item (a tuple of arrays with frames first) into the windows of
    :func:`window_bounds`, run ``step(*tensors, padding)`` on up to :data:`WINDOW_BATCH` windows at a time (windows of
    several items share a batch) and join each output back per item (frames first, on the CPU).

    A window is padded to a length that depends on its own length only (the next multiple of :data:`PAD_STEP`, at
    most ``max_frames``), and only windows of one padded length share a batch: an item's outputs never depend on the
    items it is batched with (bit for bit on a CPU), so a corpus encoded in batches gives each file's own codes."""
    max_frames = model.max_frames
    bounds = [window_bounds(len(item[0]), max_frames) for item in items]
    by_length: dict[int, list[tuple[int, int, int]]] = {}
    for i, item_bounds in enumerate(bounds):
        for a, b in item_bounds:
            by_length.setdefault(min(max_frames, -(-(b - a) // PAD_STEP) * PAD_STEP), []).append((i, a, b))
    done: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
    for length, windows in by_length.items():
        for first in range(0, len(windows), WINDOW_BATCH):
            chunk = windows[first : first + WINDOW_BATCH]
            cut = [tuple(array[a:b] for array in items[i]) for i, a, b in chunk]
            tensors, padding = collate(cut, _device(model), length)
            outputs = [(o.float() if o.is_floating_point() else o).cpu().numpy() for o in step(*tensors, padding)]
            for row, (i, a, b) in enumerate(chunk):
                done[i, a] = tuple(output[row, : b - a] for output in outputs)
    return [tuple(np.concatenate(joined) for joined in zip(*(done[i, a] for a, _ in item_bounds)))
            for i, item_bounds in enumerate(bounds)]


# ------------------------------------------------------------------------------------------------- array functions


def _valid(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``values`` when ``ok`` holds everywhere; else a UserError: the model's weights overflow."""
    if not ok.all():
        raise UserError(
            f"the model produced {int(np.count_nonzero(~ok))} invalid value(s) (NaN/inf, or codes out of range); "
            "its weights overflow — use another checkpoint or retrain"
        )
    return values


def _finite(values: np.ndarray) -> np.ndarray:
    return _valid(values, np.isfinite(values))


def _in_range(model: PoseFSQAutoencoder, codes: np.ndarray) -> np.ndarray:
    return _valid(codes, (codes >= 0) & (codes < model.codebook_size))


def _inputs(data: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    observed = ~np.asarray(mask, dtype=bool)
    values = np.where(observed[..., None], np.asarray(data, dtype=np.float32), 0.0).astype(np.float32)
    return values, observed


def reconstruct_arrays(
    model: PoseFSQAutoencoder, poses: list[tuple[np.ndarray, np.ndarray]], quantizers: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Reconstructions (T x 178 x 3 float32, normalized) and codes (T x K int64) of normalized poses (data, mask),
    from all codes of a frame or a residual model's first ``quantizers``."""
    inputs = [_inputs(data, mask) for data, mask in poses]
    results = windowed(model, inputs, lambda *batch: model(*batch, quantizers=quantizers))
    return [(_finite(recon.astype(np.float32)), codes.astype(np.int64)) for recon, codes in results]


def reconstruct_array(
    model: PoseFSQAutoencoder, data: np.ndarray, mask: np.ndarray, quantizers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruction (T x 178 x 3 float32, normalized) and codes (T x K int64) of one normalized pose, windowed."""
    return reconstruct_arrays(model, [(data, mask)], quantizers)[0]


def encode_arrays(
    model: PoseFSQAutoencoder, poses: list[tuple[np.ndarray, np.ndarray]], quantizers: int | None = None
) -> list[np.ndarray]:
    """Codes (T x codes per frame, int64; a residual model's first ``quantizers``) of normalized poses (data
    T x 178 x 3, mask T x 178 True = missing)."""
    inputs = [_inputs(data, mask) for data, mask in poses]
    results = windowed(model, inputs, lambda *batch: (model.encode(*batch, quantizers=quantizers),))
    return [_in_range(model, codes.astype(np.int64)) for codes, in results]


def encode_array(model: PoseFSQAutoencoder, data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Codes (T x codes per frame, int64) of one normalized pose (T x 178 x 3, mask T x 178 True = missing)."""
    return encode_arrays(model, [(data, mask)])[0]


def check_codes(model: PoseFSQAutoencoder, codes: np.ndarray, name: str) -> np.ndarray:
    """``codes`` as a T x K int64 array (K: all of a frame's codes, or a residual model's first K), or a UserError
    naming ``name`` and what is wrong."""
    codes = np.asarray(codes)
    if codes.ndim == 1 and model.decodes(1):
        codes = codes[:, None]
    if codes.ndim != 2 or not model.decodes(codes.shape[1]) or codes.shape[0] == 0:
        raise UserError(
            f"{name}: codes of shape {codes.shape}; this model expects frames x {model.accepted()} "
            f"(one row per frame, at least one frame)"
        )
    if not np.issubdtype(codes.dtype, np.integer):
        raise UserError(f"{name}: codes of dtype {codes.dtype}; expected integers (as `sign-vq encode` writes)")
    if len(codes) > corpus.MAX_DECODE_FRAMES:
        raise UserError(f"{name}: {len(codes)} frames; decode takes at most {corpus.MAX_DECODE_FRAMES} at once: "
                        "split the codes")
    codes = codes.astype(np.int64)
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= model.codebook_size:
        raise UserError(
            f"{name}: codes out of range [{low}, {high}]; this model's codes are 0..{model.codebook_size - 1}"
        )
    return codes


def decode_arrays(model: PoseFSQAutoencoder, codes: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    """Normalized poses (T x 178 x 3 float32) from codes (T x K, see :func:`check_codes`), windowed like
    :func:`encode_arrays`."""
    checked = [(check_codes(model, c, name),) for c, name in zip(codes, names)]
    results = windowed(model, checked, lambda batch, padding: (model.decode(batch, padding),))
    return [_finite(poses.astype(np.float32)) for poses, in results]


def decode_array(model: PoseFSQAutoencoder, codes: np.ndarray, name: str = "codes") -> np.ndarray:
    """Normalized poses (T x 178 x 3 float32) from one pose's codes (T x K, see :func:`check_codes`)."""
    return decode_arrays(model, [codes], [name])[0]


# ------------------------------------------------------------------------------------------------------ pose files


def write_pose(pose: Pose, path: Path) -> None:
    """Write ``pose`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        pose.write(handle)


def placed_pose(normalized: np.ndarray, fps: float) -> Pose:
    """A `.pose` of shoulder-normalized points placed in a 512 x 512 frame (see the module docstring)."""
    pixels = (normalized + DECODE_SHIFT) * (DECODE_FRAME / DECODE_SHIFT / 2)
    return skeleton.make_pose(pixels, np.ones(pixels.shape[:2]), fps, DECODE_FRAME, DECODE_FRAME)


def check_fps(fps: float, name: str) -> float:
    """``fps`` if it is a frame rate above 0 and at most :data:`MAX_FPS`; else a UserError naming ``name``."""
    if not 0 < fps <= MAX_FPS:  # also NaN
        raise UserError(f"{name}: fps {fps}; expected a positive frame rate up to {MAX_FPS}")
    return fps


def decode_codes(model: PoseFSQAutoencoder, codes: np.ndarray, fps: float, name: str = "codes") -> Pose:
    """A `.pose` from one pose's codes: normalized output placed in a 512 x 512 frame."""
    return placed_pose(decode_array(model, codes, name), check_fps(fps, "--fps"))


# ------------------------------------------------------------------------------------------------------ Python API

PoseLike = Union[str, Path, Pose, np.ndarray]


def normalized(pose: PoseLike) -> tuple[np.ndarray, np.ndarray]:
    """(data T x 178 x 3, mask T x 178 True = missing) of a `.pose` path, a pose-format ``Pose`` (both normalized
    by :mod:`sign_vq.preprocess`), or an already normalized array (T x 178 x 3, NaN or masked where missing, as in
    shards and archives)."""
    if isinstance(pose, (str, Path)):
        result = preprocess.preprocess_file(pose)
        return result.data, result.mask
    if isinstance(pose, Pose):
        buffer = io.BytesIO()
        pose.write(buffer)
        result = preprocess.preprocess_bytes(buffer.getvalue(), "the given Pose")
        return result.data, result.mask
    expected = f"frames x {skeleton.NUM_POINTS} x {skeleton.DIMS}"
    if not isinstance(pose, np.ndarray) or not np.issubdtype(pose.dtype, np.number):
        kind = f"an array of dtype {pose.dtype}" if isinstance(pose, np.ndarray) else f"a {type(pose).__name__}"
        raise UserError(f"{kind}: expected a .pose path, a pose_format Pose or a number array {expected}")
    array = np.ma.masked_invalid(pose)
    if array.shape[1:] != (skeleton.NUM_POINTS, skeleton.DIMS) or not len(array):
        raise UserError(f"a pose array of shape {array.shape}; expected {expected} (normalized, NaN where missing)")
    values, mask = skeleton.values_and_mask(array)
    if mask.all():
        raise UserError("a pose array with no observed point (all NaN or masked); nothing to encode")
    return values, mask


def encode(
    model: PoseFSQAutoencoder, poses: PoseLike | Sequence[PoseLike], quantizers: int | None = None
) -> np.ndarray | list[np.ndarray]:
    """Codes (frames x codes per frame, int64, 0..codebook_size-1) of one pose, or of a list of poses (run together,
    :data:`WINDOW_BATCH` windows per forward pass, on the model's device); a residual model's first ``quantizers``
    codes of each frame when given."""
    single = not isinstance(poses, (list, tuple))
    model.kept(quantizers)  # one error before any pose is read
    codes = encode_arrays(model, [normalized(p) for p in ([poses] if single else poses)], quantizers)
    return codes[0] if single else codes


def decode(model: PoseFSQAutoencoder, codes: np.ndarray | Sequence[np.ndarray], fps: float = 25.0) -> Pose | list[Pose]:
    """Poses (pose-format ``Pose``, 178 points, normalized and placed in a 512 x 512 frame) from one pose's codes
    (an integer array frames x codes per frame, or a residual model's first k codes) or from a list of them (run
    together)."""
    single = not isinstance(codes, (list, tuple))
    arrays = [codes] if single else list(codes)
    check_fps(fps, "decode")
    poses = [placed_pose(p, fps) for p in decode_arrays(model, arrays, [f"codes {i}" for i in range(len(arrays))])]
    return poses[0] if single else poses


def reconstruct_file(model: PoseFSQAutoencoder, path: Path, quantizers: int | None = None) -> Pose:
    """The reconstruction of one `.pose` file in its own coordinates, fps and frame size (confidence 1), from a
    residual model's first ``quantizers`` codes of each frame when given."""
    pose = preprocess.preprocess_file(path)
    recon, _ = reconstruct_array(model, pose.data, pose.mask, quantizers)
    data = pose.denormalize(recon).astype(np.float32)
    return skeleton.make_pose(data, np.ones(data.shape[:2]), pose.fps, pose.width, pose.height)


@dataclass
class Reduced:
    """The 178 reduced points of a file exactly as read (float32), with the file's confidence and metadata."""

    data: np.ndarray  # T x 178 x 3 float32
    confidence: np.ndarray  # T x 178 float32
    fps: float
    width: int
    height: int


def read_reduced(path: Path) -> Reduced:
    """The input's 178 canonical points as stored in the file (no wrist correction, no normalization)."""
    try:
        buffer = read_regular(path)
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror}); expected a readable .pose file") from None
    header, fps, raw, confidence = preprocess.read_raw(buffer, str(path))
    indices = preprocess.point_indices(header)
    if isinstance(indices, str):  # preprocess_file gives the full message; reached only if called on its own
        raise UserError(f"{path}: not MediaPipe Holistic: {indices}")
    return Reduced(
        data=np.array(raw[:, indices], dtype=np.float32),
        confidence=np.array(confidence[:, indices], dtype=np.float32),
        fps=fps,
        width=int(header.dimensions.width),
        height=int(header.dimensions.height),
    )


def repair_file(model: PoseFSQAutoencoder, path: Path) -> Pose:
    """Fill the missing keypoints (confidence 0, negative or NaN) of ``path`` from its reconstruction."""
    pose = preprocess.preprocess_file(path)  # validates and raises a clear error for a bad file
    reduced = read_reduced(path)
    recon, _ = reconstruct_array(model, pose.data, pose.mask)
    filled = pose.denormalize(recon).astype(np.float32)
    missing = preprocess.missing(reduced.confidence)
    data = np.where(missing[..., None], filled, reduced.data)
    confidence = np.where(missing, np.float32(FILLED_CONFIDENCE), reduced.confidence)
    log.debug("%s: filled %d of %d keypoints", path, int(missing.sum()), missing.size)
    return skeleton.make_pose(data, confidence, reduced.fps, reduced.width, reduced.height)


# ------------------------------------------------------------------------------------------------------------ CLI


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

    if len(sys.argv) > 1 and sys.argv[1] in STAGES:  # python -m sign_vq.inference encode|decode|reconstruct|repair ...
        run_module(sys.argv.pop(1))
    sys.exit(main(sys.argv[1:]))

"""Inference with a trained model: `sign-vq encode | decode | reconstruct | repair`, and the same as a Python API.

- ``encode``: one ``.npy`` per pose, integer codes of shape frames x num_codebooks.
- ``decode``: one ``.pose`` per codes file (canonical 178-point header). Codes carry no original coordinates, so the
  shoulder-normalized output is placed the way pose-format's ``normalize_pose_size`` does: a 512 x 512 frame with the
  shoulder centre at (256, 256) and a shoulder width of 204.8 pixels (``(x + 1.25) * 204.8``).
- ``reconstruct``: a ``.pose`` with the input's frame count, fps and frame size, the 178 reduced points mapped back
  to the input's own coordinates (its shoulder centre and width); every point has confidence 1.
- ``repair``: the input's 178 reduced points as read (no wrist correction), observed points (confidence > 0) copied
  bit for bit with their confidence; only the missing points are filled from the reconstruction, with confidence
  :data:`FILLED_CONFIDENCE`.

Only the first person of a multi-person file is used. Poses longer than the model's ``train_config['max_frames']``
are cut into equal windows of at most that many frames (a function of the frame count only, so
``decode(encode(x))`` equals the windowed reconstruction). A directory input keeps its relative paths under the
output folder; a bad input is reported (naming the file) and skipped, and the command then exits 2. Runs on CPU
unless ``--device`` says otherwise; never imports W&B or video libraries.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pose_format import Pose
from pose_format.numpy import NumPyPoseBody

from sign_vq import preprocess, skeleton
from sign_vq.errors import UserError
from sign_vq.fileio import atomic_open
from sign_vq.model import PoseFSQAutoencoder, load_model

HELP = {
    "encode": "encode .pose files into FSQ codes (one .npy of frames x codebooks per pose)",
    "decode": "decode code files (.npy) into .pose files (normalized poses in a 512x512 frame)",
    "reconstruct": "encode and decode .pose files, back in each input's own coordinates",
    "repair": "fill the missing keypoints of .pose files from their reconstruction (observed points unchanged)",
}
log = logging.getLogger(__name__)

FILLED_CONFIDENCE = 0.5  # confidence written for keypoints that `repair` filled in
DECODE_FRAME = 512  # pixels: decode output frame (pose-format's normalize_pose_size convention)
DECODE_SHIFT = 1.25  # shoulder widths from the shoulder centre to the frame's edge
WINDOW_BATCH = 16  # windows per forward pass


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


def _max_frames(model: PoseFSQAutoencoder) -> int:
    config = getattr(model, "train_config", None) or {}
    return int(config.get("max_frames", 128))


def _batches(frames: int, max_frames: int):
    """Yield lists of windows, at most :data:`WINDOW_BATCH` at a time, with their padded length."""
    bounds = window_bounds(frames, max_frames)
    for i in range(0, len(bounds), WINDOW_BATCH):
        chunk = bounds[i : i + WINDOW_BATCH]
        yield chunk, max(b - a for a, b in chunk)


def _stack(array: np.ndarray, chunk: list[tuple[int, int]], length: int, device: torch.device) -> torch.Tensor:
    out = np.zeros((len(chunk), length, *array.shape[1:]), dtype=array.dtype)
    for i, (a, b) in enumerate(chunk):
        out[i, : b - a] = array[a:b]
    return torch.from_numpy(out).to(device)


def _padding(chunk: list[tuple[int, int]], length: int, device: torch.device) -> torch.Tensor:
    padding = torch.ones(len(chunk), length, dtype=torch.bool)
    for i, (a, b) in enumerate(chunk):
        padding[i, : b - a] = False
    return padding.to(device)


def _unstack(batch: torch.Tensor, chunk: list[tuple[int, int]]) -> list[np.ndarray]:
    values = batch.detach().cpu().numpy()
    return [values[i, : b - a] for i, (a, b) in enumerate(chunk)]


# ------------------------------------------------------------------------------------------------- array functions


def _inputs(data: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    observed = ~np.asarray(mask, dtype=bool)
    values = np.where(observed[..., None], np.asarray(data, dtype=np.float32), 0.0).astype(np.float32)
    return values, observed


@torch.no_grad()
def reconstruct_array(model: PoseFSQAutoencoder, data: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruction (T x 178 x 3 float32, normalized) and codes (T x K int64) of a normalized pose, windowed."""
    values, observed = _inputs(data, mask)
    device = _device(model)
    recon, codes = [], []
    for chunk, length in _batches(len(values), _max_frames(model)):
        padding = _padding(chunk, length, device)
        out, idx = model(_stack(values, chunk, length, device), _stack(observed, chunk, length, device), padding)
        recon += _unstack(out.float(), chunk)
        codes += _unstack(idx, chunk)
    return np.concatenate(recon).astype(np.float32), np.concatenate(codes).astype(np.int64)


@torch.no_grad()
def encode_array(model: PoseFSQAutoencoder, data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Codes (T x num_codebooks, int64) of a normalized pose (T x 178 x 3, mask T x 178 True = missing)."""
    values, observed = _inputs(data, mask)
    device = _device(model)
    codes = []
    for chunk, length in _batches(len(values), _max_frames(model)):
        padding = _padding(chunk, length, device)
        poses, seen = _stack(values, chunk, length, device), _stack(observed, chunk, length, device)
        codes += _unstack(model.encode(poses, seen, padding), chunk)
    return np.concatenate(codes).astype(np.int64)


def check_codes(model: PoseFSQAutoencoder, codes: np.ndarray, name: str) -> np.ndarray:
    """``codes`` as a T x num_codebooks int64 array, or a UserError naming ``name`` and what is wrong."""
    codes = np.asarray(codes)
    if codes.ndim == 1 and model.num_codebooks == 1:
        codes = codes[:, None]
    if codes.ndim != 2 or codes.shape[1] != model.num_codebooks or codes.shape[0] == 0:
        raise UserError(
            f"{name}: codes of shape {codes.shape}; this model expects frames x {model.num_codebooks} "
            f"(one row per frame, at least one frame)"
        )
    if not np.issubdtype(codes.dtype, np.integer):
        raise UserError(f"{name}: codes of dtype {codes.dtype}; expected integers (as `sign-vq encode` writes)")
    codes = codes.astype(np.int64)
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= model.codebook_size:
        raise UserError(
            f"{name}: codes out of range [{low}, {high}]; this model's codes are 0..{model.codebook_size - 1}"
        )
    return codes


@torch.no_grad()
def decode_array(model: PoseFSQAutoencoder, codes: np.ndarray, name: str = "codes") -> np.ndarray:
    """Normalized poses (T x 178 x 3 float32) from codes (T x num_codebooks), windowed like :func:`encode_array`."""
    codes = check_codes(model, codes, name)
    device = _device(model)
    poses = []
    for chunk, length in _batches(len(codes), _max_frames(model)):
        padding = _padding(chunk, length, device)
        poses += _unstack(model.decode(_stack(codes, chunk, length, device), padding).float(), chunk)
    return np.concatenate(poses).astype(np.float32)


# ------------------------------------------------------------------------------------------------------ pose files


def make_pose(data: np.ndarray, confidence: np.ndarray, fps: float, width: int, height: int) -> Pose:
    """A one-person canonical 178-point pose (data T x 178 x 3, confidence T x 178)."""
    values = np.asarray(data, dtype=np.float32)[:, None]
    conf = np.asarray(confidence, dtype=np.float32)[:, None]
    mask = np.repeat((conf == 0)[..., None], skeleton.DIMS, axis=-1)
    body = NumPyPoseBody(float(fps), np.ma.MaskedArray(values, mask=mask), conf)
    return Pose(skeleton.header_for(int(width), int(height)), body)


def write_pose(pose: Pose, path: Path) -> None:
    """Write ``pose`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        pose.write(handle)


def encode_file(model: PoseFSQAutoencoder, path: Path) -> np.ndarray:
    """Codes (T x num_codebooks) of one `.pose` file."""
    pose = preprocess.preprocess_file(path)
    return encode_array(model, pose.data, pose.mask)


def decode_codes(model: PoseFSQAutoencoder, codes: np.ndarray, fps: float, name: str = "codes") -> Pose:
    """A `.pose` from codes: normalized output placed in a 512 x 512 frame (see the module docstring)."""
    if not fps > 0 or not math.isfinite(fps):
        raise UserError(f"--fps {fps}: expected a positive frame rate")
    normalized = decode_array(model, codes, name)
    pixels = (normalized + DECODE_SHIFT) * (DECODE_FRAME / DECODE_SHIFT / 2)
    return make_pose(pixels, np.ones(pixels.shape[:2]), fps, DECODE_FRAME, DECODE_FRAME)


def load_codes(path: Path) -> np.ndarray:
    """Read a `.npy` codes file; unreadable files raise a UserError naming the path."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such codes file") from None
    except (ValueError, OSError, EOFError) as error:
        raise UserError(f"{path}: not a .npy codes file ({type(error).__name__}: {error})") from None


def reconstruct_file(model: PoseFSQAutoencoder, path: Path) -> Pose:
    """The reconstruction of one `.pose` file in its own coordinates, fps and frame size (confidence 1)."""
    pose = preprocess.preprocess_file(path)
    recon, _ = reconstruct_array(model, pose.data, pose.mask)
    data = pose.denormalize(recon).astype(np.float32)
    return make_pose(data, np.ones(data.shape[:2]), pose.fps, pose.width, pose.height)


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
        buffer = Path(path).read_bytes()
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
    """Fill the missing keypoints (confidence 0) of ``path`` from its reconstruction; others stay as read."""
    pose = preprocess.preprocess_file(path)  # validates and raises a clear error for a bad file
    reduced = read_reduced(path)
    recon, _ = reconstruct_array(model, pose.data, pose.mask)
    filled = pose.denormalize(recon).astype(np.float32)
    missing = reduced.confidence == 0
    data = np.where(missing[..., None], filled, reduced.data)
    confidence = np.where(missing, np.float32(FILLED_CONFIDENCE), reduced.confidence)
    log.debug("%s: filled %d of %d keypoints", path, int(missing.sum()), missing.size)
    return make_pose(data, confidence, reduced.fps, reduced.width, reduced.height)


# ------------------------------------------------------------------------------------------------------------ CLI


def collect_inputs(inputs: list[Path], suffix: str) -> list[tuple[Path, Path]]:
    """(file, relative output stem) for files and directories (searched recursively for ``*suffix``)."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
            files = sorted(item.rglob(f"*{suffix}"))
            if not files:
                raise UserError(f"{item}: no *{suffix} files in this directory")
            found += [(f, f.relative_to(item).with_suffix("")) for f in files]
        elif item.exists():
            found.append((item, Path(item.name).with_suffix("")))
        else:
            raise UserError(f"{item}: no such file or directory")
    seen: dict[Path, Path] = {}
    for path, stem in found:
        if stem in seen:
            raise UserError(f"{path}: its output name {stem} collides with that of {seen[stem]}; pass them separately")
        seen[stem] = path
    return found


def _model(args: argparse.Namespace) -> PoseFSQAutoencoder:
    return load_on(args.model, args.device)


def load_on(model: Path, device: str = "cpu") -> PoseFSQAutoencoder:
    """:func:`load_model` onto ``device`` (e.g. ``cpu``, ``cuda``, ``cuda:1``), with a clear error if it is absent."""
    try:
        target = torch.device(device)
    except RuntimeError as error:
        raise UserError(f"--device {device}: {error}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return load_model(model, map_location=target).to(target)


def add_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--model", required=True, type=Path, help="model.ckpt, or a training output folder")
    parser.add_argument("--output", required=True, type=Path, help="output folder (keeps input relative paths)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    if stage == "decode":
        parser.add_argument("--fps", required=True, type=float, help="frame rate of the written poses")
        parser.add_argument("inputs", nargs="+", type=Path, metavar="CODES", help=".npy files or folders of them")
    else:
        parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help=".pose files or folders of them")


def run(args: argparse.Namespace) -> int:
    stage = args.stage
    files = collect_inputs(args.inputs, ".npy" if stage == "decode" else ".pose")
    model = _model(args)
    errors: list[str] = []
    for path, stem in files:
        try:
            if stage == "encode":
                codes = encode_file(model, path)
                dtype = np.int32 if model.codebook_size <= np.iinfo(np.int32).max else np.int64
                with atomic_open(args.output / stem.with_suffix(".npy"), "wb") as handle:
                    np.save(handle, codes.astype(dtype), allow_pickle=False)
            elif stage == "decode":
                pose = decode_codes(model, load_codes(path), args.fps, str(path))
                write_pose(pose, args.output / stem.with_suffix(".pose"))
            elif stage == "reconstruct":
                write_pose(reconstruct_file(model, path), args.output / stem.with_suffix(".pose"))
            else:
                write_pose(repair_file(model, path), args.output / stem.with_suffix(".pose"))
        except UserError as error:
            if str(path) not in str(error):
                error = UserError(f"{path}: {error}")
            if len(files) > 1:  # a single file's error is the final message; do not print it twice
                log.error("%s", error)
            errors.append(str(error))
    log.info("%s: %d of %d file(s) written to %s", stage, len(files) - len(errors), len(files), args.output)
    if errors:
        if len(errors) == 1:
            raise UserError(errors[0])
        raise UserError(f"{len(errors)} of {len(files)} inputs failed (first: {errors[0]})")
    return 0


if __name__ == "__main__":
    import sys

    from sign_vq.cli import main, run_module

    if len(sys.argv) > 1 and sys.argv[1] in HELP:  # python -m sign_vq.inference encode|decode|reconstruct|repair ...
        run_module(sys.argv.pop(1))
    sys.exit(main(sys.argv[1:]))

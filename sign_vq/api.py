"""The Python API over pose-format: ``encode``/``decode`` of `.pose` files, Poses and arrays, and the `.pose`
outputs of `sign-vq decode | reconstruct | repair`.

- decoded poses carry no original coordinates, so the shoulder-normalized output is placed the way pose-format's
  ``normalize_pose_size`` does: a 512 x 512 frame with the shoulder centre at (256, 256) and a shoulder width of
  204.8 pixels (``(x + 1.25) * 204.8``);
- a reconstruction has the input's frame count, fps and frame size, the 178 reduced points mapped back to the
  input's own coordinates; every point has confidence 1;
- a repair keeps the input's observed points bit for bit with their confidence and fills only the missing ones
  from the reconstruction, with confidence :data:`FILLED_CONFIDENCE`.

Only the first person of a multi-person file is used.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from pose_format import Pose

from sign_vq.errors import UserError
from sign_vq.fileio import atomic_open, read_regular
from sign_vq.model.codes import decode_array, decode_arrays, encode_arrays, reconstruct_array
from sign_vq.model.network import PoseFSQAutoencoder
from sign_vq.poses import preprocess, skeleton

log = logging.getLogger(__name__)
FILLED_CONFIDENCE = 0.5  # confidence written for keypoints that `repair` filled in
DECODE_FRAME = 512  # pixels: decode output frame (pose-format's normalize_pose_size convention)
DECODE_SHIFT = 1.25  # shoulder widths from the shoulder centre to the frame's edge
MAX_FPS = 10_000.0  # frame rates decode writes (a .pose stores fps as float32)


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


def normalized(pose: PoseLike) -> tuple[np.ndarray, np.ndarray]:
    """(data T x 178 x 3, mask T x 178 True = missing) of a `.pose` path, a pose-format ``Pose`` (both normalized
    by :mod:`sign_vq.poses.preprocess`), or an already normalized array (T x 178 x 3, NaN or masked where missing, as in
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


PoseLike = Union[str, Path, Pose, np.ndarray]


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

"""Read one `.pose` file and turn it into the normalized 178-point array every later stage uses.

Order of operations (the one documented `normalize` path):
1. read the header (cached per distinct header) and the body straight from the bytes with numpy;
2. check it is MediaPipe Holistic in 3-D (full: body 33, face 468/478, both hands; or already reduced to 178);
3. keep the 178 canonical points; a point is missing (masked) where its confidence is not a positive number
   (0, negative, NaN or infinite);
4. put each hand model's wrist in place of the body wrist in the frames where that hand was seen;
5. shoulder-normalize: subtract the mean shoulder midpoint and divide by the mean 2-D shoulder width, both over the
   frames where both shoulders are seen, leaving out glitched frames (see :func:`shoulder_frame`);
6. mask outlier points (farther than ``outlier_limit`` shoulder widths from the shoulder centre, or too far for
   float16) and count them;
7. store float16 values with the mask, plus what is needed to map a reconstruction back
   (``center``, ``scale``, ``fps``, frame size).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pose_format.pose_header import PoseHeader
from pose_format.utils.reader import BufferReader

from sign_vq.config import default
from sign_vq.errors import BadPoseError
from sign_vq.fileio import read_regular
from sign_vq.poses import skeleton

DEFAULT_OUTLIER_LIMIT = default("normalize.outlier_limit")  # shoulder widths from the shoulder centre
FLOAT16_MAX = float(np.finfo(np.float16).max)  # normalized values beyond it are outliers: never stored as inf
WIDTH_RATIO = 4.0  # frames whose shoulder width is over 4x or under 1/4 of the median do not set the shoulder frame,
SHIFT_LIMIT = 2.0  # nor frames whose shoulder midpoint is more than 2 median widths from the median midpoint
_EXPECTED = (
    "expected MediaPipe Holistic with x,y,z: POSE_LANDMARKS(33), FACE_LANDMARKS(468 or 478), "
    "LEFT_HAND_LANDMARKS(21), RIGHT_HAND_LANDMARKS(21) [, POSE_WORLD_LANDMARKS(33)], or the reduced 178-point layout"
)


def denormalize(data: np.ndarray, center: np.ndarray | list[float], scale: float) -> np.ndarray:
    """Normalized values (frames x 178 x 3) back in original coordinates: ``data * scale + center`` (float64)."""
    return data.astype(np.float64) * float(scale) + np.asarray(center, dtype=np.float64)


@dataclass
class NormalizedPose:
    """A shoulder-normalized pose in the canonical layout, with what is needed to undo the normalization."""

    data: np.ndarray  # float16, frames x 178 x 3, shoulder widths from the shoulder centre
    mask: np.ndarray  # bool, frames x 178, True where the point is missing
    fps: float
    center: np.ndarray  # float64 (3,), original coordinates of the mean shoulder midpoint
    scale: float  # mean shoulder width in original (pixel) units
    width: int
    height: int
    outliers: int = 0  # points masked because they were far outside the body
    meta: dict = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return self.data.shape[0]

    def masked(self) -> np.ma.MaskedArray:
        """The pose as a float16 masked array (frames x 178 x 3)."""
        return np.ma.MaskedArray(self.data, mask=np.repeat(self.mask[..., None], skeleton.DIMS, axis=-1))

    def denormalize(self, data: np.ndarray) -> np.ndarray:
        """Map normalized values (frames x 178 x 3) back to this pose's original coordinates."""
        return denormalize(data, self.center, self.scale)

    def info(self) -> dict:
        """JSON-serializable metadata (everything but the arrays)."""
        return {
            "frames": int(self.frames),
            "fps": float(self.fps),
            "center": [float(c) for c in self.center],
            "scale": float(self.scale),
            "width": int(self.width),
            "height": int(self.height),
            "outliers": int(self.outliers),
            **self.meta,
        }


def _describe(header: PoseHeader) -> str:
    return ", ".join(f"{c.name}({len(c.points)}, {c.format})" for c in header.components)


def _header_signature(header: PoseHeader) -> tuple:
    return tuple((c.name, c.format, tuple(c.points)) for c in header.components)


@functools.lru_cache(maxsize=64)
def _point_indices(signature: tuple) -> np.ndarray | str:
    """Indices of the 178 canonical points in a file with this header, or the reason it is not usable."""
    components = {name: (fmt, points) for name, fmt, points in signature}
    dims = {len(fmt) - 1 for fmt, _ in components.values()}  # the last format letter is the confidence
    missing = [n for n in (skeleton.BODY, skeleton.FACE, skeleton.LEFT_HAND, skeleton.RIGHT_HAND) if n not in components]
    problems = [f"missing component(s) {', '.join(missing)}"] if missing else []
    if dims != {3}:
        problems.append(f"{min(dims, default=0)}-D points where 3-D (x,y,z) is required")
    if problems:
        return "; ".join(problems)
    offsets, offset = {}, 0
    for name, _, points in signature:
        offsets[name] = offset
        offset += len(points)
    indices = []
    for component in skeleton.canonical_header().components:
        lookup = {p: i for i, p in enumerate(components[component.name][1])}
        absent = [p for p in component.points if p not in lookup]
        if absent:
            return f"{component.name} lacks point(s) {', '.join(absent[:5])}"
        indices.extend(offsets[component.name] + lookup[p] for p in component.points)
    face_size = len(components[skeleton.FACE][1])
    if face_size not in (*skeleton.FACE_SIZES, 128):
        return f"FACE_LANDMARKS has {face_size} points"
    return np.asarray(indices, dtype=np.intp)


_HEADER_CACHE: dict[bytes, tuple[PoseHeader, int]] = {}  # header bytes -> (header, length); oldest first
_HEADER_CACHE_SIZE = 64


def read_header(buffer: bytes) -> tuple[PoseHeader, int]:
    """The header of a `.pose` buffer and its length in bytes, cached by the header's exact bytes.

    Parsing is deterministic, so a buffer that starts with the bytes of a header parsed before has that header.
    Safe to call from several threads (the cache is only read from a snapshot, and dict updates are atomic).
    """
    for raw, cached in tuple(_HEADER_CACHE.items()):
        if buffer.startswith(raw):
            return cached
    reader = BufferReader(buffer)
    header = PoseHeader.read(reader)
    length = reader.read_offset
    _HEADER_CACHE[bytes(buffer[:length])] = (header, length)
    while len(_HEADER_CACHE) > _HEADER_CACHE_SIZE:
        _HEADER_CACHE.pop(next(iter(_HEADER_CACHE)), None)
    return header, length


def read_raw(buffer: bytes, name: str) -> tuple[PoseHeader, float, np.ndarray, np.ndarray]:
    """Parse a `.pose` buffer: header, fps, data (frames x points x dims, float32) and confidence of person 0."""
    if len(buffer) == 0:
        raise BadPoseError(f"{name}: empty file (0 bytes); expected a .pose file — re-export or re-download it")
    buffer = bytes(buffer)
    try:
        header, offset = read_header(buffer)
        points = sum(len(c.points) for c in header.components)
        dims = max((len(c.format) - 1 for c in header.components), default=0)
        if header.version >= 0.2 - 1e-6:
            fps, frames = struct.unpack_from("<fI", buffer, offset)
            offset += 8
        else:
            fps, frames = struct.unpack_from("<HH", buffer, offset)
            offset += 4
        (people,) = struct.unpack_from("<H", buffer, offset)
        offset += 2
    except BadPoseError:
        raise
    except Exception as error:  # pose-format raises many types on garbage
        raise BadPoseError(
            f"{name}: not a readable .pose file ({type(error).__name__}: {error}); "
            "expected a pose-format v0.1/v0.2 file — re-export or re-download it"
        ) from None
    if not header.components:
        raise BadPoseError(
            f"{name}: not a readable .pose file (the header declares no components, version {header.version:g}); "
            "expected a pose-format v0.1/v0.2 file — re-export or re-download it"
        )
    per_frame = people * points * (dims + 1) * 4
    available = len(buffer) - offset
    if header.version < 0.2 - 1e-6 and per_frame:
        stored = frames
        frames = available // per_frame  # v0.1 stores the frame count in 16 bits: derive it from the size
        if frames % 65536 != stored:  # fewer whole frames than announced (modulo the 16-bit overflow)
            raise BadPoseError(
                f"{name}: truncated: header announces {stored} frames, the body holds {available} bytes "
                f"({available / per_frame:.1f} frames) — re-download the file"
            )
    if per_frame and available < frames * per_frame:
        raise BadPoseError(
            f"{name}: truncated: header announces {frames} frames ({frames * per_frame} bytes of body), "
            f"found {available} bytes — re-download the file"
        )
    if people == 0 or frames == 0:
        raise BadPoseError(f"{name}: zero frames (frames={frames}, people={people}); expected at least one frame")
    data = np.frombuffer(buffer, dtype="<f4", count=frames * people * points * dims, offset=offset)
    conf_offset = offset + data.nbytes
    confidence = np.frombuffer(buffer, dtype="<f4", count=frames * people * points, offset=conf_offset)
    data = data.reshape(frames, people, points, dims)[:, 0]
    confidence = confidence.reshape(frames, people, points)[:, 0]
    return header, float(fps), data, confidence


def correct_wrists(data: np.ndarray, mask: np.ndarray) -> None:
    """In place: where a hand was seen, its model's wrist replaces the (less precise) body wrist."""
    for side in ("left", "right"):
        seen = ~mask[:, skeleton.HAND_WRIST[side]]
        data[seen, skeleton.BODY_WRIST[side]] = data[seen, skeleton.HAND_WRIST[side]]
        mask[seen, skeleton.BODY_WRIST[side]] = False


def missing(confidence: np.ndarray) -> np.ndarray:
    """True where a point is missing: its confidence is 0, negative, NaN or infinite."""
    return ~((confidence > 0) & (confidence < np.inf))


def shoulder_frame(data: np.ndarray, mask: np.ndarray, name: str) -> tuple[np.ndarray, float]:
    """The mean shoulder midpoint (x,y,z) and mean 2-D shoulder width over the frames where both shoulders are seen,
    leaving out glitched frames (see :func:`usual_frames`)."""
    both = ~(mask[:, skeleton.LEFT_SHOULDER] | mask[:, skeleton.RIGHT_SHOULDER])
    if not both.any():
        raise BadPoseError(
            f"{name}: no body: the shoulders are never detected in {len(mask)} frames; "
            "expected a signer whose shoulders are visible (needed for normalization)"
        )
    shoulders = data[:, [skeleton.LEFT_SHOULDER, skeleton.RIGHT_SHOULDER]][both].astype(np.float64)  # n x 2 x 3
    middle = (shoulders[:, 0] + shoulders[:, 1]) * 0.5
    across = shoulders[:, 0, :2] - shoulders[:, 1, :2]
    width = np.sqrt(np.einsum("ij,ij->i", across, across))
    if not _steady(width, middle):
        keep = usual_frames(width, middle)
        middle, width = middle[keep], width[keep]
    scale = float(width.sum() / len(width))
    if not scale > 0:
        raise BadPoseError(f"{name}: shoulder width is 0; expected two distinct shoulder points")
    return middle.sum(axis=0) / len(width), scale


def _steady(width: np.ndarray, middle: np.ndarray) -> bool:
    """True when no frame can be a glitch, decided without medians (the common case): the widths lie within
    :data:`WIDTH_RATIO` of each other and the midpoints within :data:`SHIFT_LIMIT` of the narrowest width."""
    low = width.min()
    spread = middle[:, :2].max(axis=0) - middle[:, :2].min(axis=0)
    return bool(width.max() <= low * WIDTH_RATIO and np.hypot(*spread) <= SHIFT_LIMIT * low)


def usual_frames(width: np.ndarray, middle: np.ndarray) -> np.ndarray:
    """Which frames set the shoulder frame, given each frame's 2-D shoulder width and midpoint (n x 3).

    Left out: a width more than :data:`WIDTH_RATIO` times the median width or less than the median over it, and a
    midpoint more than :data:`SHIFT_LIMIT` median widths from the median midpoint. A glitched frame thus moves neither
    the centre nor the scale; real signers turning (widths 0.33-1.7x the median in the 469 real files) or leaning
    (midpoints within 1.06 widths) stay within both.
    """
    typical = _lower_median(width)  # the width of an actual frame
    usual = (width <= typical * WIDTH_RATIO) & (width >= typical / WIDTH_RATIO)  # holds for the median frame
    offset = middle[:, :2] - _lower_median(middle[usual, :2])
    keep = usual & (np.einsum("ij,ij->i", offset, offset) <= (SHIFT_LIMIT * typical) ** 2)
    return keep if keep.any() else usual  # midpoints scattered everywhere: the width criterion alone


def _lower_median(values: np.ndarray) -> np.ndarray:
    """The lower median along the first axis: an actual value (per column), cheaper than ``np.median``."""
    middle = (len(values) - 1) // 2
    return np.partition(values, middle, axis=0)[middle]


def point_indices(header: PoseHeader) -> np.ndarray | str:
    """Indices of the 178 canonical points in a file with this header, or why it is not usable.

    Remembered on the (cached, shared) header object."""
    indices = getattr(header, "_sign_vq_indices", None)
    if indices is None:
        indices = _point_indices(_header_signature(header))
        header._sign_vq_indices = indices
    return indices


def preprocess_bytes(
    buffer: bytes,
    name: str,
    *,
    outlier_limit: float = DEFAULT_OUTLIER_LIMIT,
    fix_wrists: bool = True,
) -> NormalizedPose:
    """Validate, reduce, correct and normalize one `.pose` buffer (see the module docstring)."""
    header, fps, raw, confidence = read_raw(buffer, name)
    indices = point_indices(header)
    if isinstance(indices, str):
        raise BadPoseError(f"{name}: not MediaPipe Holistic: {indices}; found {_describe(header)}; {_EXPECTED}")
    data = np.take(raw, indices, axis=1)  # a float32 copy of the 178 points
    mask = missing(np.take(confidence, indices, axis=1))
    all_finite = bool(np.isfinite(data.sum(dtype=np.float64)))  # float64 cannot overflow on float32 values
    if not all_finite:
        finite = np.isfinite(data).all(axis=-1) | mask
        if not finite.all():
            frames = np.unique(np.nonzero(~finite)[0])
            raise BadPoseError(
                f"{name}: {int((~finite).sum())} point(s) with NaN/inf coordinates in {len(frames)} frame(s) "
                f"(first: frame {int(frames[0])}); expected finite values — re-run pose estimation on this video"
            )
    if not np.isfinite(fps) or fps <= 0:
        raise BadPoseError(f"{name}: invalid fps {fps}; expected a positive frame rate")
    if fix_wrists:
        correct_wrists(data, mask)
    center, scale = shoulder_frame(data, mask, name)
    # In place, in float32 (24-bit mantissa, far finer than the 11 bits of the float16 result), on the
    # frames x (178*3) view so that numpy runs contiguous loops rather than broadcasts over a last axis of 3.
    normalized = data
    flat = normalized.reshape(len(normalized), -1)
    flat -= np.tile(center.astype(np.float32), skeleton.NUM_POINTS)
    flat *= np.float32(1.0 / scale)
    if all_finite:
        flat *= np.repeat(~mask, skeleton.DIMS, axis=1)  # missing points are 0
    else:
        normalized[mask] = 0  # missing points may hold NaN/inf, which a product would keep
    limit = min(outlier_limit, FLOAT16_MAX)
    outliers = 0
    if not (flat.max() <= limit and flat.min() >= -limit):  # also when a value overflowed float32 (inf, or NaN)
        bad = ~(np.abs(normalized) <= limit).all(axis=-1)
        outlier = bad & ~mask
        outliers = int(outlier.sum())
        mask |= outlier
        normalized[bad] = 0
    return NormalizedPose(
        data=normalized.astype(np.float16),
        mask=mask,
        fps=fps,
        center=center,
        scale=scale,
        width=int(header.dimensions.width),
        height=int(header.dimensions.height),
        outliers=outliers,
    )


def preprocess_file(path: str | Path, **options) -> NormalizedPose:
    """Read ``path`` and run :func:`preprocess_bytes` on it; every error names the file."""
    path = Path(path)
    try:
        buffer = read_regular(path)
    except OSError as error:
        raise BadPoseError(f"{path}: cannot read ({error.strerror}); expected a readable .pose file") from None
    return preprocess_bytes(buffer, str(path), **options)

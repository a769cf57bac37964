"""The canonical 178-point MediaPipe Holistic layout that every stage works in."""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
from pose_format import Pose
from pose_format.numpy import NumPyPoseBody
from pose_format.pose_header import PoseHeader, PoseHeaderDimensions
from pose_format.utils.reader import BufferReader

BODY, FACE, LEFT_HAND, RIGHT_HAND = "POSE_LANDMARKS", "FACE_LANDMARKS", "LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS"
NUM_POINTS = 178
DIMS = 3
# Parts of the reduced layout, in point order: name -> slice.
PARTS: dict[str, slice] = {
    "body": slice(0, 8),
    "face": slice(8, 136),
    "left_hand": slice(136, 157),
    "right_hand": slice(157, 178),
}
LEFT_SHOULDER, RIGHT_SHOULDER = 0, 1
BODY_WRIST = {"left": 4, "right": 5}
HAND_WRIST = {"left": PARTS["left_hand"].start, "right": PARTS["right_hand"].start}
# Face points of full meshes have 468 (or 478 with irises) points; the 10 iris points are never kept.
FACE_SIZES = (468, 478)


@functools.cache
def canonical_header() -> PoseHeader:
    """The reduced 178-point header (components, point names, limbs, colours) shipped with the package."""
    data = resources.files("sign_vq.poses").joinpath("holistic178.poseheader").read_bytes()
    return PoseHeader.read(BufferReader(data))


def header_for(width: int, height: int) -> PoseHeader:
    """The canonical header with the given frame dimensions, for writing `.pose` files."""
    base = canonical_header()
    return PoseHeader(version=0.2, dimensions=PoseHeaderDimensions(width, height, 1), components=base.components)


def values_and_mask(pose: np.ma.MaskedArray) -> tuple[np.ndarray, np.ndarray]:
    """A masked pose (T x 178 x 3) as float32 values, 0 where missing, and its mask (T x 178, True = missing: a point
    with any coordinate masked): what the model and the metrics take."""
    return np.ma.filled(pose.astype(np.float32), 0.0), np.ma.getmaskarray(pose).any(axis=-1)


def make_pose(data: np.ndarray, confidence: np.ndarray, fps: float, width: int, height: int) -> Pose:
    """A one-person canonical 178-point pose (data T x 178 x 3, confidence T x 178; 0 = not observed)."""
    values = np.asarray(data, dtype=np.float32)[:, None]
    conf = np.asarray(confidence, dtype=np.float32)[:, None]
    mask = np.repeat((conf == 0)[..., None], DIMS, axis=-1)
    body = NumPyPoseBody(float(fps), np.ma.MaskedArray(values, mask=mask), conf)
    return Pose(header_for(int(width), int(height)), body)

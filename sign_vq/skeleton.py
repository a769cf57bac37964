"""The canonical 178-point MediaPipe Holistic layout that every stage works in."""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
from pose_format.pose_header import PoseHeader, PoseHeaderDimensions
from pose_format.utils.reader import BufferReader

BODY, FACE, LEFT_HAND, RIGHT_HAND = "POSE_LANDMARKS", "FACE_LANDMARKS", "LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS"
WORLD = "POSE_WORLD_LANDMARKS"
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
    data = resources.files("sign_vq").joinpath("holistic178.poseheader").read_bytes()
    return PoseHeader.read(BufferReader(data))


def header_for(width: int, height: int) -> PoseHeader:
    """The canonical header with the given frame dimensions, for writing `.pose` files."""
    base = canonical_header()
    return PoseHeader(version=0.2, dimensions=PoseHeaderDimensions(width, height, 1), components=base.components)


def part_of_points() -> np.ndarray:
    """An array of 178 part indices (0 body, 1 face, 2 left hand, 3 right hand)."""
    out = np.empty(NUM_POINTS, dtype=np.int64)
    for i, part in enumerate(PARTS.values()):
        out[part] = i
    return out

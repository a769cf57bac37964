"""The pose zip's layout (format 2), shared by its reader (:mod:`.posezip`) and writer (:mod:`.zipwriter`): the
index columns, the zip records, pose ids and the `.npy` header of a pose member."""

from __future__ import annotations

import functools
import hashlib
import io
import struct

import numpy as np

from sign_vq.poses import skeleton

FORMAT = "sign-vq-posezip/2"
INDEX = "index.json"
POSE_PREFIX, POSE_SUFFIX = b"poses/", b".npy"
FRAME_BYTES = skeleton.NUM_POINTS * skeleton.DIMS * 2  # float16 bytes of one frame
NPY_HEADER_MAX = 4096  # an .npy header of a pose is 128 bytes; anything past this is not one
DEFLATE_RATIO = 1032  # deflate never expands data by more than this: bounds the frames an index may claim
SPLITS = (None, "train", "val")  # the codes of the `split` column
# per-pose columns: dtype and trailing shape
COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "key": ("<u8", ()),  # 64-bit BLAKE2b of the id: duplicate ids and the train/val split
    "offset": ("<u8", ()),  # where the member's compressed bytes start in the file
    "size": ("<u4", ()),  # compressed bytes of the member
    "crc": ("<u4", ()),  # CRC-32 of the member's .npy bytes
    "frames": ("<u4", ()),
    "fps": ("<f8", ()),
    "center": ("<f8", (skeleton.DIMS,)),
    "scale": ("<f8", ()),
    "width": ("<i4", ()),
    "height": ("<i4", ()),
    "outliers": ("<u4", ()),
    "split": ("u1", ()),
    "id_end": ("<u8", ()),  # end of each id in `ids`
}
# what each metadata column must hold: (valid rows of the column, the expectation in words)
VALID = {
    "fps": (lambda v: np.isfinite(v) & (v >= 0), "a finite frame rate, 0 when unknown"),
    "scale": (lambda v: np.isfinite(v) & (v > 0), "a finite shoulder width above 0"),
    "center": (lambda v: np.isfinite(v).all(axis=-1), "finite coordinates"),
    "width": (lambda v: v >= 0, "a frame width of 0 or more"),
    "height": (lambda v: v >= 0, "a frame height of 0 or more"),
}
INFO_DEFAULTS = {"fps": 0.0, "center": (0.0,) * skeleton.DIMS, "scale": 1.0, "width": 0, "height": 0, "outliers": 0}
LOCAL = struct.Struct("<IHHHHHIIIHH")  # local file header, before the name
LOCAL_SIG, CENTRAL_SIG, END_SIG = 0x04034B50, 0x02014B50, 0x06054B50
END64_SIG, LOCATOR_SIG = 0x06064B50, 0x07064B50
END = struct.Struct("<IHHHHIIH")
END64 = struct.Struct("<IQHHIIQQQQ")
LOCATOR = struct.Struct("<IIQI")
UTF8, DEFLATED, STORED = 0x0800, 8, 0
DOS_DATE = 0x21  # 1980-01-01: members carry no time, so equal inputs give equal files
ZIP64 = 45
CENTRAL = np.dtype(
    [("sig", "<u4"), ("made", "<u2"), ("needed", "<u2"), ("flags", "<u2"), ("method", "<u2"), ("time", "<u2"),
     ("date", "<u2"), ("crc", "<u4"), ("csize", "<u4"), ("usize", "<u4"), ("name_len", "<u2"), ("extra_len", "<u2"),
     ("comment_len", "<u2"), ("disk", "<u2"), ("internal", "<u2"), ("external", "<u4"), ("offset", "<u4")]
)  # 46 bytes; the name follows, then a zip64 extra field holding the 64-bit local header offset
EXTRA = np.dtype([("tag", "<u2"), ("len", "<u2"), ("offset", "<u8")])


def id_key(pose_id: str) -> int:
    """The 64-bit BLAKE2b of a pose id (stored per pose: the archive splits and checks ids without Python loops)."""
    return int.from_bytes(hashlib.blake2b(pose_id.encode("utf-8"), digest_size=8).digest(), "big")


@functools.lru_cache(maxsize=4096)
def npy_header(shape: tuple[int, ...], dtype: str, fortran: bool) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": fortran, "shape": shape})
    return buffer.getvalue()


def id_at(ids: np.ndarray, id_end: np.ndarray, index: int) -> str:
    start = int(id_end[index - 1]) if index else 0
    return bytes(ids[start : int(id_end[index])]).decode("utf-8", "replace")

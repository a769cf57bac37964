"""Shared fixtures: the real pose files of ../shared/data/poses (beside the repository) and helpers to build bad ones."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data" / "poses").resolve()

# The realistic wrong inputs among the real files (see ../shared/data/README.md).
OPENPOSE = "pose-format/openpose.pose"
HANDS_ONLY = ("pose-format/mediapipe_hand_normalized.pose", "pose-format/mediapipe_long_hand_normalized.pose")
BAD_REAL = (OPENPOSE, *HANDS_ONLY)
FULL_468 = "pose-format/holistic_example.pose"  # full holistic, 468 face points
FULL_478 = "pose-format/84322c38ff23406f222641da30d0a49b.pose"  # full holistic, 478 face points


def _require_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real pose data not found at {DATA} (expected ../shared/data/poses beside the repository)")
    return DATA


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _require_data()


@pytest.fixture(scope="session")
def all_files(data_dir) -> list[Path]:
    files = sorted(data_dir.rglob("*.pose"))
    assert len(files) == 472, f"expected the 472 real .pose files in {data_dir}, found {len(files)}"
    return files


def relative(path: Path) -> str:
    return path.resolve().relative_to(DATA).as_posix()


@pytest.fixture(scope="session")
def good_files(all_files) -> list[Path]:
    return [f for f in all_files if relative(f) not in BAD_REAL]


@pytest.fixture(scope="session")
def bad_files(all_files) -> list[Path]:
    return [f for f in all_files if relative(f) in BAD_REAL]


@pytest.fixture(scope="session")
def lexicon_files(data_dir) -> list[Path]:
    return sorted((data_dir / "lexicon").glob("*.pose"))


@pytest.fixture(scope="session")
def full_holistic_file(data_dir) -> Path:
    """A real full-holistic file (468 face points) in which each hand is seen in some frames and not in others."""
    return data_dir / FULL_468


def read_pose(path: Path):
    """The file read by pose-format (the independent reference for our reader)."""
    from pose_format import Pose

    return Pose.read(Path(path).read_bytes())


def pose_bytes(pose) -> bytes:
    """A pose-format ``Pose`` written to bytes."""
    buffer = io.BytesIO()
    pose.write(buffer)
    return buffer.getvalue()


def with_body(pose, data: np.ndarray, confidence: np.ndarray):
    """A copy of ``pose`` (same header and fps) with new data (frames x people x points x dims) and confidence."""
    from pose_format import Pose

    body = type(pose.body)(pose.body.fps, np.ma.masked_array(data.astype(np.float32)), confidence.astype(np.float32))
    return Pose(pose.header, body)


def point_index(header, component: str, point: str) -> int:
    return header.get_point_index(component, point)

"""Shared fixtures: the real pose files inside the repository, the optional large corpus, helpers to build bad ones.

``data_dir`` is a small real corpus: the bundled examples (``examples/poses``) and the test files (``tests/data/poses``)
merged into one folder with the layout of the full corpus. Corpus-wide sweeps also run on the folder named by
``SIGN_VQ_CORPUS`` (the 472 files of ../shared/data/poses in CI); without it those cases are skipped.
"""

from __future__ import annotations

import io
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

pytest_plugins = ["fixtures_model"]  # the session's trained model (`trained`) and the training data (`dataset`)

# One thread per test process and per process it starts: the tiny models of the tests train several times faster
# than with two threads fighting other work for 2 cores, and timings do not depend on the machine's core count.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "poses"
TEST_DATA = REPO / "tests" / "data" / "poses"
CORPUS_ENV = "SIGN_VQ_CORPUS"
CORPUS_FILES = 472  # the development corpus (../shared/data/poses)
TOP_FOLDERS = ("fingerspelling", "lexicon", "pose-format")  # the corpus layout; a pose's id starts with one of them

# The realistic wrong inputs among the real files (see tests/data/README.md).
OPENPOSE = "pose-format/openpose.pose"
HANDS_ONLY = ("pose-format/mediapipe_hand_normalized.pose", "pose-format/mediapipe_long_hand_normalized.pose")
BAD_REAL = (OPENPOSE, *HANDS_ONLY)
FULL_468 = "pose-format/holistic_example.pose"  # full holistic, 468 face points
FULL_478 = "pose-format/84322c38ff23406f222641da30d0a49b.pose"  # full holistic, 478 face points
# The only real files with far-away (outlier) points, both in `gss`; the second one is in tests/data.
OUTLIER_FILES = (
    "fingerspelling/gss/fs-stsac418fb13dce8b253c46824b350b6927.pose",
    "fingerspelling/gss/fs-stsc004c81c6a4651fc5cc69151f3c30576.pose",
)


# The only skips a clean clone may show (`make test`): the corpus sweeps, and what needs hardware it lacks.
EXPECTED_SKIPS = ("corpus sweep:", "no Slurm here", "this machine has CUDA")
STRICT_SKIPS_ENV = "SIGN_VQ_STRICT_SKIPS"  # set to 1: any other skip fails the run
_skipped: list[tuple[str, str]] = []


def pytest_collection_modifyitems(config, items) -> None:
    """Skip the `slurm` tests where Slurm is not installed; order the files for `make test`'s pytest-xdist workers
    (``--dist loadfile --no-loadscope-reorder``: a file's tests stay on one worker, one build of each module fixture,
    the two runs on the local Slurm take turns on its 4 CPU slots). The files with `slurm` tests go first (their jobs
    mostly wait on the executor's status checks, while the other workers use the cores), then those with the most
    `slow` tests, so that the workers share the short files at the end instead of one ending alone on a long one."""
    if shutil.which("sinfo") is None:
        for item in items:
            if item.get_closest_marker("slurm"):
                item.add_marker(pytest.mark.skip(reason="no Slurm here (`sinfo` not found); CI starts one"))
    slurm = {item.path for item in items if item.get_closest_marker("slurm")}
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items[:] = sorted(items, key=lambda item: (item.path not in slurm, -slow[item.path]))


def pytest_runtest_logreport(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Name the skips a clean clone should not have (missing tools or extras); fail on them if strict."""
    unexpected = [(node, reason) for node, reason in _skipped if not any(e in reason for e in EXPECTED_SKIPS)]
    if not unexpected:
        return
    terminalreporter.write_line(f"{len(unexpected)} unexpected skip(s) (install what they name):", yellow=True)
    for node, reason in unexpected:
        terminalreporter.write_line(f"  {node}: {reason}")
    if os.environ.get(STRICT_SKIPS_ENV) == "1":
        terminalreporter._session.exitstatus = pytest.ExitCode.TESTS_FAILED


def corpus_dir() -> Path:
    """The large corpus named by ``SIGN_VQ_CORPUS``; skips the test when it is not set."""
    value = os.environ.get(CORPUS_ENV)
    if not value:
        pytest.skip(f"corpus sweep: set {CORPUS_ENV} to a folder of .pose files (CI: ../shared/data/poses)")
    path = Path(value).resolve()
    if not path.is_dir():
        pytest.fail(f"{CORPUS_ENV}={value} is not a folder")
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The examples and the test files merged into one folder with the corpus layout (copied once per session)."""
    root = tmp_path_factory.mktemp("poses")
    for source in (EXAMPLES, TEST_DATA):
        shutil.copytree(source, root, dirs_exist_ok=True)
    return root


@pytest.fixture(scope="session", params=["sample", pytest.param("corpus", marks=pytest.mark.corpus)])
def all_files(request, data_dir) -> list[Path]:
    """Every real file of the in-repository sample, and (case ``corpus``) of the large corpus."""
    if request.param == "sample":
        return sorted(data_dir.rglob("*.pose"))
    files = sorted(corpus_dir().rglob("*.pose"))
    assert len(files) == CORPUS_FILES, f"expected {CORPUS_FILES} .pose files in {CORPUS_ENV}, found {len(files)}"
    return files


def relative(path: Path) -> str:
    """A real file's id in the corpus layout (``pose-format/openpose.pose``), whichever root it lies under."""
    parts = Path(path).parts
    start = max(i for i, part in enumerate(parts) if part in TOP_FOLDERS)
    return "/".join(parts[start:])


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

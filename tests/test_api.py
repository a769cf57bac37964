"""The Python API (`sign_vq.load/encode/decode`): the README's snippet runs as written; every input kind agrees."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from pose_format import Pose

import sign_vq
from conftest import EXAMPLES, REPO
from fixtures_model import make_checkpoint
from sign_vq.poses import preprocess

LONG = EXAMPLES / "lexicon" / "essen.pose"  # 73 frames: several windows of 16


def readme_snippet() -> str:
    """The Python block of the README's "Python API" section."""
    section = (REPO / "README.md").read_text().split("### Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return sign_vq.load(make_checkpoint(tmp_path_factory.mktemp("model") / "model.ckpt", num_codebooks=2))


def test_readme_snippet_runs_as_written(tmp_path, monkeypatch):
    make_checkpoint(tmp_path / "results" / "model" / "model.ckpt")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_snippet(), "README.md", "exec"), scope)
    frames = Pose.read(LONG.read_bytes()).body.data.shape[0]
    assert scope["codes"].shape == (frames, 1) and scope["codes"].dtype == np.int64
    assert isinstance(scope["poses"], Pose) and scope["poses"].body.data.shape == (frames, 1, 178, 3)
    assert scope["poses"].body.fps == 24


def test_import_is_light():
    heavy = ("torch", "pose_format", "sign_vq.api")
    probe = f"import sys, sign_vq; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_path_pose_and_arrays_give_the_same_codes(model):
    expected = sign_vq.encode(model, LONG)
    pose = Pose.read(LONG.read_bytes())
    normalized = preprocess.preprocess_file(LONG)
    assert np.array_equal(sign_vq.encode(model, str(LONG)), expected)
    assert np.array_equal(sign_vq.encode(model, pose), expected)
    assert np.array_equal(sign_vq.encode(model, normalized.masked()), expected)  # masked array
    assert np.array_equal(sign_vq.encode(model, normalized.masked().filled(np.nan)), expected)  # NaN = missing


def test_lists_are_batched_and_equal_one_at_a_time(model):
    files = sorted(EXAMPLES.rglob("*.pose"))
    codes = sign_vq.encode(model, files)
    assert isinstance(codes, list) and len(codes) == len(files)
    assert all(np.array_equal(c, sign_vq.encode(model, f)) for c, f in zip(codes, files))
    poses = sign_vq.decode(model, codes, fps=30)
    for c, pose in zip(codes, poses):
        assert np.array_equal(pose.body.data, sign_vq.decode(model, c, fps=30).body.data)
        assert pose.body.data.shape[0] == len(c) and pose.body.fps == 30


def test_bad_arrays_are_user_errors(model):
    with pytest.raises(sign_vq.errors.UserError, match="expected frames x 178 x 3"):
        sign_vq.encode(model, np.zeros((5, 10, 3)))
    with pytest.raises(sign_vq.errors.UserError, match="codes out of range"):
        sign_vq.decode(model, np.full((4, 2), 5000))


@pytest.mark.parametrize(
    "pose, message",
    [(None, "a NoneType: expected a .pose path, a pose_format Pose or a number array frames x 178 x 3"),
     (np.array([object()] * 3), "an array of dtype object: expected a .pose path"),
     (np.full((4, 178, 3), np.nan), "a pose array with no observed point (all NaN or masked); nothing to encode"),
     (np.ma.masked_all((4, 178, 3)), "a pose array with no observed point")],
    ids=["none", "objects", "all-nan", "all-masked"],
)
def test_inputs_that_are_no_pose_or_hold_no_point_are_refused(model, pose, message):
    with pytest.raises(sign_vq.errors.UserError) as error:
        sign_vq.encode(model, pose)
    assert str(error.value).startswith(message)

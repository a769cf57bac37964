"""The original sign-vq's commands: `poses_to_codes` and `codes_to_poses` give what `sign-vq encode`/`decode` give."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pose_format import Pose

from conftest import EXAMPLES
from fixtures_model import make_checkpoint
from sign_vq.cli import main
from sign_vq.stages.compat import codes_to_poses, poses_to_codes


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "model.ckpt", max_frames=40, num_codebooks=2)


def test_poses_to_codes_is_encode(trained, tmp_path):
    """The console script, with the original's flags, on the trained model."""
    script = Path(sys.executable).with_name("poses_to_codes")
    run = subprocess.run([str(script), "--data", str(EXAMPLES), "--output", str(tmp_path / "a.csv"),
                          "--model", str(trained.model)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert main(["encode", "--model", str(trained.model), "--output", str(tmp_path / "b.csv"), str(EXAMPLES)]) == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_codes_to_poses_is_decode(model, tmp_path):
    table = tmp_path / "codes.csv"
    assert poses_to_codes(["--data", str(EXAMPLES / "lexicon"), "--output", str(table), "--model", str(model)]) == 0
    rows = list(csv.DictReader(table.open()))
    assert main(["decode", "--model", str(model), "--output", str(tmp_path / "decoded"), str(table)]) == 0
    single = tmp_path / "one.pose"
    assert codes_to_poses(["--codes", rows[0]["codes"], "--output", str(single), "--model", str(model),
                           "--fps", rows[0]["fps"]]) == 0
    (tmp_path / "codes.txt").write_text("".join(f"{row['codes']}\n" for row in rows))
    assert codes_to_poses(["--codes", str(tmp_path / "codes.txt"), "--output", str(tmp_path / "many"),
                           "--model", str(model), "--fps", rows[0]["fps"]]) == 0
    for index, row in enumerate(rows):
        expected = Pose.read((tmp_path / "decoded" / row["file"]).read_bytes())
        got = Pose.read((tmp_path / "many" / f"{index}.pose").read_bytes())
        assert np.array_equal(got.body.data, expected.body.data)
    assert np.array_equal(Pose.read(single.read_bytes()).body.data,
                          Pose.read((tmp_path / "decoded" / rows[0]["file"]).read_bytes()).body.data)


@pytest.mark.parametrize("codes, problem", [
    ("1 2 x", "codes must be integers"), ("1 2 3", "3 codes do not make whole frames of this model's 2 codes"),
    ("1 5000", "codes out of range"), ("", "0 codes do not make whole frames"),
])
def test_bad_codes_are_one_line(model, tmp_path, caplog, codes, problem):
    with caplog.at_level(logging.ERROR):
        assert codes_to_poses(["--codes", codes, "--output", str(tmp_path / "x.pose"), "--model", str(model)]) == 2
    assert problem in caplog.text and "Traceback" not in caplog.text and not (tmp_path / "x.pose").exists()


def test_codes_given_directly_need_a_file_output(model, tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert codes_to_poses(["--codes", "1 2", "--output", str(tmp_path), "--model", str(model)]) == 2
    assert "codes given directly go to one .pose file" in caplog.text

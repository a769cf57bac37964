"""The codes corpus in the original sign-vq's columns (file,fps,length,codes): a reader written against those names
reads what `sign-vq encode` writes; the original's and the earlier layout read back; duplicate ids; the split column."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
from pose_format import Pose

from conftest import EXAMPLES
from fixtures_model import make_checkpoint
from sign_vq.cli import main
from sign_vq.formats.corpus import format_fps
from sign_vq.formats.posezip import PoseZip
from sign_vq.model.checkpoint import load_model


def original_reader(path: Path) -> dict[str, tuple[float, int, list[list[int]]]]:
    """What a downstream pipeline of the original does: the columns by name, ``len(codes) / length`` codes a frame
    (one source factor per codebook)."""
    poses = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            codes, length = [int(c) for c in row["codes"].split(" ")], int(row["length"])
            assert len(codes) % length == 0
            width = len(codes) // length
            poses[row["file"]] = (float(row["fps"]), width, [codes[i : i + width] for i in range(0, len(codes), width)])
    return poses


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "model.ckpt", max_frames=40, num_codebooks=2)


def test_a_corpus_of_the_trained_model_reads_with_the_original_columns(trained, tmp_path):
    table = tmp_path / "codes.csv"
    assert main(["encode", "--model", str(trained.model), "--output", str(table), str(EXAMPLES)]) == 0
    assert table.read_text().splitlines()[0] == "file,fps,length,codes"
    poses = original_reader(table)
    files = sorted(EXAMPLES.rglob("*.pose"))
    assert sorted(poses) == sorted(f.relative_to(EXAMPLES).as_posix() for f in files)
    width = load_model(trained.model).num_codebooks
    fps_text = {row["file"]: row["fps"] for row in csv.DictReader(table.open())}
    for name, (fps, codes_per_frame, frames) in poses.items():
        pose = Pose.read((EXAMPLES / name).read_bytes())
        assert codes_per_frame == width and len(frames) == len(pose.body.data)
        assert np.float32(fps) == pose.body.fps and fps_text[name] == format_fps(pose.body.fps)
        assert len(fps_text[name].replace(".", "")) <= 9  # float32's shortest text, never float64's 17 digits


def test_fps_is_written_as_the_file_says_it():
    assert [format_fps(np.float32(x)) for x in (29.97, 24, 25.0, 59.94, 30000 / 1001)] == [
        "29.97", "24.0", "25.0", "59.94", "29.97003"]


def test_the_original_and_the_earlier_layout_decode_alike(model, tmp_path):
    codes = "1 2 3 4 5 6"
    layouts = {
        "original": f"file,fps,length,codes\nsub/a.pose,29.969999313354492,3,{codes}\nb.pose,25.0,1,7 8\n",
        "earlier": f"id,fps,frames,codes\nsub/a,29.97,3,{codes}\nb,25.0,1,7 8\n",
        "extra columns": f"text,codes,length,fps,file,split\nhello,{codes},3,29.97,sub/a.pose,val\nx,7 8,1,25,b,\n",
    }
    decoded = {}
    for name, text in layouts.items():
        (tmp_path / f"{name}.csv").write_text(text)
        out = tmp_path / name
        assert main(["decode", "--model", str(model), "--output", str(out), str(tmp_path / f"{name}.csv")]) == 0
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.pose")) == ["b.pose", "sub/a.pose"]
        decoded[name] = Pose.read((out / "sub" / "a.pose").read_bytes())
    for pose in decoded.values():
        assert np.array_equal(pose.body.data, decoded["original"].body.data)
        assert pose.body.fps == np.float32(29.97)


def test_duplicate_ids_are_refused_with_both_line_numbers(model, tmp_path, caplog):
    table = tmp_path / "codes.csv"
    table.write_text("file,fps,length,codes\na.pose,25,1,1 2\nb.pose,25,1,3 4\na,25,1,5 6\n")
    with caplog.at_level(logging.ERROR):
        assert main(["decode", "--model", str(model), "--output", str(tmp_path / "out"), str(table)]) == 2
    assert f"{table}:4: id 'a' is also on line 2" in caplog.text and "Traceback" not in caplog.text
    first = Pose.read((tmp_path / "out" / "a.pose").read_bytes())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.pose", "b.pose"] and len(first.body.data) == 1


def test_encode_writes_an_id_once(model, tmp_path, caplog):
    table, one = tmp_path / "codes.csv", EXAMPLES / "lexicon" / "essen.pose"
    with caplog.at_level(logging.ERROR):
        assert main(["encode", "--model", str(model), "--output", str(table), str(one), str(one)]) == 2
    assert [row["file"] for row in csv.DictReader(table.open())] == ["essen.pose"]
    assert "essen: this id occurs twice in the inputs" in caplog.text


def test_encoding_an_archive_adds_its_split(model, tmp_path):
    shard, archive = tmp_path / "shard.zip", tmp_path / "archive.zip"
    files = sorted(EXAMPLES.rglob("*.pose"))
    assert main(["normalize", "--output", str(shard), "--root", str(EXAMPLES), *map(str, files)]) == 0
    assert main(["archive", "--val-fraction", "0.5", "--output", str(archive), str(shard)]) == 0
    expected = {f"{e['id']}.pose": e["split"] for e in PoseZip(archive).entries}
    for source, header in ((archive, "file,fps,length,codes,split"), (shard, "file,fps,length,codes")):
        table = tmp_path / f"{source.stem}.csv"
        assert main(["encode", "--model", str(model), "--output", str(table), str(source)]) == 0
        assert table.read_text().splitlines()[0] == header
    splits = {row["file"]: row["split"] for row in csv.DictReader((tmp_path / "archive.csv").open())}
    assert splits == expected and set(splits.values()) == {"train", "val"}
    assert original_reader(tmp_path / "archive.csv") == original_reader(tmp_path / "shard.csv")

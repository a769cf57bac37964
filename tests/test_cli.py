"""The `sign-vq` command line: version, a help that imports no stage, global flags anywhere; the codes corpus."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pose_format import Pose

import sign_vq
from conftest import EXAMPLES
from fixtures_model import make_checkpoint
from sign_vq.cli import STAGES, build_parser, main
from sign_vq.formats import corpus

STAGE_MODULES = sorted({stage.module for stage in STAGES.values()})


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"sign-vq {sign_vq.__version__}"


def test_help_lists_every_stage_and_imports_none():
    probe = (
        "import sys\nfrom sign_vq.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        f"print('IMPORTED', sorted(m for m in sys.modules if m in {STAGE_MODULES!r} or m in ('torch', 'lightning')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert all(stage in out for stage in STAGES)
    assert out.strip().endswith("IMPORTED []")


def test_every_stage_help_imports_neither_torch_nor_lightning():
    """`sign-vq STAGE --help` builds the stage's parser from argparse-level code: fast, and on a core install too."""
    probe = (
        "import sys\nfrom sign_vq.cli import STAGES, main\nfor stage in STAGES:\n"
        "    try:\n        main([stage, '--help'])\n    except SystemExit as e:\n        assert e.code == 0, stage\n"
        "print('IMPORTED', sorted(m for m in ('torch', 'lightning', 'google_crc32c') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.count("usage: sign-vq") == len(STAGES)
    assert out.strip().endswith("IMPORTED []")


def test_help_marks_the_stages_that_need_an_extra(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    lines = " ".join(capsys.readouterr().out.split())
    for stage, extra in (("sync", "sync"), ("train", "train"), ("render", "render")):
        assert f"{stage} {STAGES[stage].summary} [needs the {extra} extra]" in lines
    assert "needs the" not in STAGES["encode"].help()


@pytest.mark.parametrize("stage, missing, flags", [
    ("train", "lightning", ["--archive", "a.zip", "--stats", "s.json", "--output", "out"]),
    ("render", "cv2", ["--model", "m.ckpt", "--archive", "a.zip", "--output", "out"]),
    ("sync", "google_crc32c", ["--bucket", "gs://b", "--output", "m", "--lists", "l", "--shards", "1"]),
])
def test_a_stage_whose_extra_is_missing_is_one_line_naming_it(tmp_path, stage, missing, flags):
    """As on a core install: the stage's module cannot be imported; the user reads which extra to install."""
    probe = f"import sys\nsys.modules[{missing!r}] = None\nfrom sign_vq.cli import main\nsys.exit(main({[stage, *flags]!r}))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip().endswith(
        f"sign-vq {stage}: needs the {stage} extra (no module {missing!r}): pip install 'sign-vq[{stage}]'")
    assert len(run.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


@pytest.mark.parametrize("flags", [["-v"], ["--verbose"]])
def test_global_flags_before_or_after_the_stage(flags):
    rest = ["--model", "m.ckpt", "--output", "o", "x.pose"]
    assert build_parser("encode").parse_args(["encode", *rest]).verbose is False
    assert build_parser("encode").parse_args([*flags, "encode", *rest]).verbose is True
    assert build_parser("encode").parse_args(["encode", *flags, *rest]).verbose is True
    assert build_parser("encode").parse_args(["encode", *rest, *flags]).verbose is True


# ------------------------------------------------------------------------------------------------ codes corpus


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """An untrained model with windows of at most 40 frames: the examples (5 to 73 frames) are padded to 16, 32 or 40
    and the longest span two windows; codes depend only on the input."""
    return make_checkpoint(tmp_path_factory.mktemp("model") / "model.ckpt", max_frames=40, num_codebooks=2)


def read_corpus(path: Path) -> dict[str, tuple[float, np.ndarray]]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return {r["file"].removesuffix(".pose"): (float(r["fps"]), np.array(r["codes"].split(), int).reshape(
        int(r["length"]), -1)) for r in rows}


def test_corpus_encode_decode_round_trip_equals_per_file(model, tmp_path):
    """encode -> one CSV -> decode gives the same codes and the same poses as encode/decode one file at a time."""
    table = tmp_path / "codes.csv"
    assert main(["encode", "--model", str(model), "--output", str(table), str(EXAMPLES)]) == 0
    assert table.read_text().splitlines()[0] == "file,fps,length,codes"
    rows = read_corpus(table)
    files = sorted(EXAMPLES.rglob("*.pose"))
    assert sorted(rows) == sorted(f.relative_to(EXAMPLES).with_suffix("").as_posix() for f in files)

    assert main(["encode", "--model", str(model), "--output", str(tmp_path / "npy"), str(EXAMPLES)]) == 0
    assert main(["decode", "--model", str(model), "--output", str(tmp_path / "from-csv"), str(table)]) == 0
    for pose_id, (fps, codes) in rows.items():
        single = np.load(tmp_path / "npy" / f"{pose_id}.npy")
        original = Pose.read((EXAMPLES / f"{pose_id}.pose").read_bytes())
        assert np.array_equal(codes, single) and codes.shape == (original.body.data.shape[0], 2)
        assert np.float32(fps) == np.float32(original.body.fps)
        per_file = tmp_path / "per-file" / pose_id
        assert main(["decode", "--model", str(model), "--fps", str(fps), "--output", str(per_file),
                     str(tmp_path / "npy" / f"{pose_id}.npy")]) == 0
        decoded = Pose.read((tmp_path / "from-csv" / f"{pose_id}.pose").read_bytes())
        alone = Pose.read((per_file / f"{Path(pose_id).name}.pose").read_bytes())
        assert np.array_equal(decoded.body.data, alone.body.data) and decoded.body.fps == pytest.approx(fps)


def test_encode_reads_shards_and_archives_like_pose_files(model, tmp_path):
    shard, archive = tmp_path / "shard.zip", tmp_path / "archive.zip"
    files = sorted(EXAMPLES.rglob("*.pose"))
    assert main(["normalize", "--output", str(shard), "--root", str(EXAMPLES), *map(str, files)]) == 0
    assert main(["archive", "--output", str(archive), str(shard)]) == 0
    outputs = {}
    for name, source in (("files", EXAMPLES), ("shard", shard), ("archive", archive)):
        outputs[name] = tmp_path / f"{name}.csv"
        assert main(["encode", "--model", str(model), "--output", str(outputs[name]), str(source)]) == 0
    expected = read_corpus(outputs["files"])
    for name in ("shard", "archive"):
        got = read_corpus(outputs[name])
        assert sorted(got) == sorted(expected)
        assert all(np.array_equal(got[k][1], expected[k][1]) and got[k][0] == expected[k][0] for k in expected)


def test_corpus_streams_in_batches(model, tmp_path, monkeypatch):
    """More poses than one batch: every row is written once, in input order."""
    monkeypatch.setattr(corpus, "POSE_BATCH", 5)
    table = tmp_path / "codes.csv"
    assert main(["encode", "--model", str(model), "--output", str(table), str(EXAMPLES)]) == 0
    ids = [row[0] for row in csv.reader(table.open())][1:]
    assert ids == [f.relative_to(EXAMPLES).as_posix() for f in sorted(EXAMPLES.rglob("*.pose"))]


def test_bad_corpus_rows_are_one_line_errors_naming_the_line(model, tmp_path, caplog):
    table = tmp_path / "codes.csv"
    table.write_text("id,fps,frames,codes\na,25,2,1 2 3 4\nb,25,3,1 2 3 4\nc,25,1,5 x\nd,25,1,999999 1\ne,25,1,7 8\n")
    with caplog.at_level(logging.ERROR):
        assert main(["decode", "--model", str(model), "--output", str(tmp_path / "out"), str(table)]) == 2
    text = caplog.text
    assert f"{table}:3: 4 codes do not make 3 frames" in text
    assert f"{table}:4: bad row" in text
    assert f"{table}:5: codes out of range" in text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.pose", "e.pose"]  # the good rows
    assert "Traceback" not in text

    (tmp_path / "other.csv").write_text("name,codes\nx,1 2\n")
    with caplog.at_level(logging.ERROR):
        code = main(["decode", "--model", str(model), "--output", str(tmp_path / "o2"), str(tmp_path / "other.csv")])
    assert code == 2
    assert "expected file,fps,length,codes" in caplog.text


def test_npy_codes_need_an_fps(model, tmp_path, caplog):
    np.save(tmp_path / "a.npy", np.zeros((3, 2), np.int32))
    with caplog.at_level(logging.ERROR):
        assert main(["decode", "--model", str(model), "--output", str(tmp_path / "out"), str(tmp_path / "a.npy")]) == 2
    assert "pass --fps" in caplog.text


def test_ids_cannot_leave_the_output_folder(model, tmp_path, caplog):
    table = tmp_path / "codes.csv"
    table.write_text("id,fps,frames,codes\n../evil,25,1,1 2\n/abs/x,25,1,1 2\na/./b,25,1,1 2\nok/sub,25,1,1 2\n")
    out = tmp_path / "deep" / "out"
    with caplog.at_level(logging.ERROR):
        assert main(["decode", "--model", str(model), "--output", str(out), str(table)]) == 2
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.pose"))
    assert written == ["deep/out/ok/sub.pose"]
    for bad in ("../evil", "/abs/x", "a/./b"):
        assert f"id {bad!r}: not a relative path inside the output folder" in caplog.text


# ------------------------------------------------------------------------ hostile names and values (issue 21)

LONG_POSE = EXAMPLES / "lexicon" / "essen.pose"


def one_line_errors(caplog) -> str:
    text = caplog.text
    assert "Traceback" not in text and all(len(r.getMessage().splitlines()) == 1 for r in caplog.records)
    return text


def test_a_file_name_that_is_not_utf8_loses_only_its_own_row(model, tmp_path, caplog):
    folder = tmp_path / "poses"
    folder.mkdir()
    (folder / "essen.pose").symlink_to(LONG_POSE)
    os.symlink(LONG_POSE, os.path.join(os.fsencode(folder), b"bad-\xff.pose"))
    table = tmp_path / "codes.csv"
    with caplog.at_level(logging.ERROR):
        assert main(["encode", "--model", str(model), "--output", str(table), str(folder)]) == 2
    assert "bad-\\xff: the name is not valid UTF-8, so the codes corpus cannot hold it" in one_line_errors(caplog)
    assert list(read_corpus(table)) == ["essen"]


def test_decode_refuses_rows_beyond_its_frame_limit_before_reading_them(model, tmp_path, caplog):
    frames = corpus.MAX_DECODE_FRAMES + 1
    table = tmp_path / "codes.csv"
    table.write_text(f"id,fps,frames,codes\nlong,25,{frames},1 2\nlying,25,1,{'1 2 ' * 200}\nok,25,1,1 2\n")
    with caplog.at_level(logging.ERROR):
        assert main(["decode", "--model", str(model), "--output", str(tmp_path / "out"), str(table)]) == 2
    text = one_line_errors(caplog)
    assert f"{table}:2: {frames} frames (3 characters of codes); decode takes at most" in text
    assert f"{table}:3: 1 frames (800 characters of codes); decode takes at most" in text
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ok.pose"]
    with pytest.raises(sign_vq.errors.UserError, match=f"codes 0: {frames} frames; decode takes at most"):
        sign_vq.decode(sign_vq.load(model), np.zeros((frames, 2), np.int64))


def test_huge_values_in_a_corpus_and_long_names_are_one_line_errors(model, tmp_path, caplog):
    long_id = "x" * 250  # its .pose fits in 255 bytes; the temporary name beside it did not
    table = tmp_path / "codes.csv"
    table.write_text(f"id,fps,frames,codes\nhuge-code,25,1,{10**30} 1\nhuge-fps,1e308,1,1 2\n{long_id},25,1,1 2\n"
                     f"{'y' * 260},25,1,1 2\n")
    with caplog.at_level(logging.ERROR):
        assert main(["decode", "--model", str(model), "--output", str(tmp_path / "out"), str(table)]) == 2
    text = one_line_errors(caplog)
    assert f"{table}:2: bad row" in text and f"{table}:3: fps 1e+308; expected a positive frame rate up to" in text
    assert "a file name longer than 255 bytes; shorten it in the input" in text
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"{long_id}.pose"]
    with pytest.raises(sign_vq.errors.UserError, match="fps 1e[+]300; expected a positive frame rate"):
        sign_vq.decode(sign_vq.load(model), np.zeros((3, 2), np.int64), fps=1e300)


@pytest.mark.parametrize("stage", ["encode", "decode", "reconstruct"])
def test_an_output_folder_that_is_an_existing_file_is_one_line(model, tmp_path, caplog, stage):
    existing = tmp_path / "taken"
    existing.write_text("mine")
    extra = ["--fps", "25"] if stage == "decode" else []
    source = tmp_path / "a.npy" if stage == "decode" else LONG_POSE
    np.save(tmp_path / "a.npy", np.zeros((3, 2), np.int32))
    for output in (existing, existing / "sub"):
        with caplog.at_level(logging.ERROR):
            assert main([stage, "--model", str(model), *extra, "--output", str(output), str(source)]) == 2
        assert f"--output {output}: cannot make the output folder" in one_line_errors(caplog)
    assert existing.read_text() == "mine"
    with caplog.at_level(logging.ERROR):
        assert main(["encode", "--model", str(model), "--output", str(tmp_path), str(LONG_POSE)]) == 0  # a folder
        (tmp_path / "folder.csv").mkdir()
        assert main(["encode", "--model", str(model), "--output", str(tmp_path / "folder.csv"), str(LONG_POSE)]) == 2
    assert "folder.csv: a folder; name a FILE.csv for the codes corpus" in one_line_errors(caplog)

"""Inference API and the encode / decode / reconstruct / repair commands, on real files and a model trained here."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pose_format import Pose

from conftest import OPENPOSE, REPO, pose_bytes, with_body
from fixtures_model import EXAMPLES, MAX_FRAMES, make_checkpoint
from sign_vq.api import FILLED_CONFIDENCE, decode_codes, encode, placed_pose, read_reduced, reconstruct_file
from sign_vq.batch import collect_inputs
from sign_vq.cli import main
from sign_vq.errors import UserError
from sign_vq.evaluation.metrics import ReconstructionMetrics
from sign_vq.model.checkpoint import load_model, load_on, read_checkpoint
from sign_vq.model.codes import decode_array, encode_array, reconstruct_array
from sign_vq.model.windows import window_bounds
from sign_vq.poses import preprocess, skeleton

FPS_29 = "pose-format/0ff215ef4f1f111e217e2cefee0adc77.pose"  # 29.89 fps, full holistic
LONG = EXAMPLES / "lexicon" / "essen.pose"  # 73 frames: several windows of MAX_FRAMES


def read(path: Path) -> Pose:
    return Pose.read(Path(path).read_bytes())


def per_part(recon: np.ndarray, pose: preprocess.NormalizedPose, metrics: ReconstructionMetrics) -> None:
    """Add one pose (reconstruction in the pose's own coordinates) to ``metrics`` in shoulder widths."""
    normalized = (recon.astype(np.float64) - pose.center) / pose.scale
    metrics.update(
        torch.from_numpy(normalized)[None],
        torch.from_numpy(pose.data.astype(np.float64))[None],
        torch.from_numpy(~pose.mask)[None],
    )


def test_window_bounds_are_equal_and_cover_every_frame():
    assert window_bounds(0, 48) == []
    assert window_bounds(48, 48) == [(0, 48)]
    bounds = window_bounds(73, 48)
    assert bounds == [(0, 36), (36, 73)]
    for frames in (1, 47, 97, 1000):
        bounds = window_bounds(frames, 48)
        assert bounds[0][0] == 0 and bounds[-1][1] == frames
        assert all(b0[1] == b1[0] for b0, b1 in zip(bounds, bounds[1:]))
        assert max(b - a for a, b in bounds) <= 48


def test_reconstruct_real_files_keeps_frames_fps_size_and_relative_paths(trained, data_dir, tmp_path):
    """Round trip on the examples (a folder input) and a 29.89-fps file: pose-format reads every output."""
    fps_file = data_dir / FPS_29
    out = tmp_path / "out"
    assert main(["reconstruct", "--model", str(trained.model), "--output", str(out), str(EXAMPLES), str(fps_file)]) == 0
    pairs = [(f, out / f.relative_to(EXAMPLES)) for f in trained.files] + [(fps_file, out / fps_file.name)]
    for source, target in pairs:
        original, result = read(source), read(target)
        assert result.body.data.shape == (original.body.data.shape[0], 1, skeleton.NUM_POINTS, 3), target
        assert result.body.fps == pytest.approx(original.body.fps, rel=1e-6)
        assert (result.header.dimensions.width, result.header.dimensions.height) == (
            original.header.dimensions.width,
            original.header.dimensions.height,
        )
        assert [c.name for c in result.header.components] == [c.name for c in skeleton.canonical_header().components]
        assert np.isfinite(result.body.data.data).all()
    assert read(out / fps_file.name).body.fps == pytest.approx(29.89, abs=0.01)


def test_reconstruction_beats_the_trivial_reference_on_training_data(trained):
    """Per part (body, face, hands), in the pose's own coordinates / shoulder width, pooled over the examples."""
    model = load_model(trained.model)
    metrics = ReconstructionMetrics(model.codebook_size, model.bits_per_frame)
    for path in trained.files:
        recon = reconstruct_file(model, path)
        per_part(np.asarray(recon.body.data.data[:, 0], dtype=np.float64), preprocess.preprocess_file(path), metrics)
    result = metrics.compute()
    print(json.dumps({k: round(v, 4) for k, v in result.items()}))
    for part in skeleton.PARTS:
        assert result[f"ratio_{part}"] < 1, (part, result[f"error_{part}"], result[f"reference_{part}"])
    assert result["ratio_mse"] < 1


def test_repair_fills_masked_hand_points_and_keeps_observed_ones_bit_for_bit(trained, tmp_path):
    """20 % of the observed hand points of a real pose are hidden (confidence 0), then repaired."""
    source = EXAMPLES / "lexicon" / "kleine.pose"
    pose = read(source)
    reduced = read_reduced(source)  # the 178 points as stored
    data = np.array(pose.body.data.data)
    confidence = np.array(pose.body.confidence)
    index = {
        (c.name, p): i
        for i, (c, p) in enumerate((c, p) for c in pose.header.components for p in c.points)
    }
    canonical = [(c.name, p) for c in skeleton.canonical_header().components for p in c.points]
    file_index = np.array([index[key] for key in canonical])
    hands = np.r_[skeleton.PARTS["left_hand"], skeleton.PARTS["right_hand"]]
    observed = np.argwhere(reduced.confidence[:, hands] > 0)
    rng = np.random.default_rng(0)
    hidden = observed[rng.choice(len(observed), size=len(observed) // 5, replace=False)]
    frames, points = hidden[:, 0], hands[hidden[:, 1]]
    confidence[frames, 0, file_index[points]] = 0
    broken = tmp_path / "in" / "kleine.pose"
    broken.parent.mkdir()
    broken.write_bytes(pose_bytes(with_body(pose, data, confidence)))

    assert main(["repair", "--model", str(trained.model), "--output", str(tmp_path / "out"), str(broken)]) == 0
    repaired = read(tmp_path / "out" / "kleine.pose")
    out_data = np.asarray(repaired.body.data.data[:, 0], dtype=np.float32)
    out_conf = np.asarray(repaired.body.confidence[:, 0], dtype=np.float32)
    kept = read_reduced(broken).confidence > 0
    # observed points: the input's float32 values and confidences, unchanged bit for bit
    assert np.array_equal(out_data[kept].view(np.uint32), reduced.data[kept].view(np.uint32))
    assert np.array_equal(out_conf[kept], reduced.confidence[kept])
    # filled points: confidence 0.5, closer to the hidden truth than each point's mean over its observed frames
    assert np.all(out_conf[frames, points] == FILLED_CONFIDENCE)
    truth = reduced.data[frames, points]
    mean = np.array([reduced.data[kept[:, p], p].mean(axis=0) for p in points])
    error = np.linalg.norm(out_data[frames, points] - truth, axis=-1).mean()
    reference = np.linalg.norm(mean - truth, axis=-1).mean()
    print(f"repair: {len(frames)} hidden hand points, error {error:.2f} px vs trivial reference {reference:.2f} px")
    assert error < reference


def test_encode_then_decode_equals_the_forward_reconstruction(trained):
    model = load_model(trained.model)
    pose = preprocess.preprocess_file(LONG)
    assert pose.frames > MAX_FRAMES
    codes = encode_array(model, pose.data, pose.mask)
    assert codes.shape == (pose.frames, model.num_codebooks)
    recon, forward_codes = reconstruct_array(model, pose.data, pose.mask)
    assert np.array_equal(codes, forward_codes)
    decoded = decode_array(model, codes)
    np.testing.assert_allclose(decoded, recon, atol=1e-5)


def test_encode_and_decode_commands(trained, tmp_path):
    model = load_model(trained.model)
    assert main(["encode", "--model", str(trained.model), "--output", str(tmp_path / "codes"), str(EXAMPLES / "lexicon")]) == 0
    files = sorted((tmp_path / "codes").glob("*.npy"))
    assert [f.stem for f in files] == ["essen", "kinder", "kleine", "pizza"]
    for f in files:
        codes = np.load(f)
        assert np.issubdtype(codes.dtype, np.integer)
        assert codes.shape == (read(EXAMPLES / "lexicon" / f"{f.stem}.pose").body.data.shape[0], model.num_codebooks)
        assert codes.min() >= 0 and codes.max() < model.codebook_size
    assert main(["decode", "--model", str(trained.model), "--fps", "29.97", "--output", str(tmp_path / "poses"),
                 str(tmp_path / "codes")]) == 0
    decoded = read(tmp_path / "poses" / "essen.pose")
    assert decoded.body.fps == pytest.approx(29.97)
    assert decoded.body.data.shape == (73, 1, skeleton.NUM_POINTS, 3)
    assert (decoded.header.dimensions.width, decoded.header.dimensions.height) == (512, 512)
    # pose-format's normalize_pose_size frame: shoulders centred at (256, 256), 204.8 px apart on average
    shoulders = decoded.body.data.data[:, 0, [skeleton.LEFT_SHOULDER, skeleton.RIGHT_SHOULDER], :2]
    assert np.allclose(shoulders.mean(axis=(0, 1)), 256, atol=30)
    assert np.linalg.norm(shoulders[:, 0] - shoulders[:, 1], axis=-1).mean() == pytest.approx(204.8, rel=0.15)


@pytest.mark.parametrize("num_codebooks", [1, 2])
def test_one_and_two_codebook_models_encode_and_decode(tmp_path, num_codebooks):
    checkpoint = make_checkpoint(tmp_path / "model.ckpt", num_codebooks=num_codebooks)
    model = load_model(checkpoint)
    assert model.num_codebooks == num_codebooks
    pose = preprocess.preprocess_file(LONG)
    codes = encode_array(model, pose.data, pose.mask)
    assert codes.shape == (pose.frames, num_codebooks)
    recon, _ = reconstruct_array(model, pose.data, pose.mask)
    np.testing.assert_allclose(decode_array(model, codes), recon, atol=1e-5)
    assert main(["encode", "--model", str(checkpoint), "--output", str(tmp_path / "c"), str(LONG)]) == 0
    assert np.load(tmp_path / "c" / "essen.npy").shape == (pose.frames, num_codebooks)
    assert main(["decode", "--model", str(checkpoint), "--fps", "25", "--output", str(tmp_path / "p"),
                 str(tmp_path / "c" / "essen.npy")]) == 0
    assert read(tmp_path / "p" / "essen.pose").body.data.shape[0] == pose.frames


def test_residual_encode_quantizers_round_trips_through_the_codes_corpus(tmp_path, caplog):
    checkpoint = make_checkpoint(tmp_path / "model.ckpt", quantizer="residual", num_quantizers=4)
    model = load_model(checkpoint)
    pose = preprocess.preprocess_file(LONG)
    corpus_file = tmp_path / "codes.csv"
    assert main(["encode", "--model", str(checkpoint), "--quantizers", "2", "--output", str(corpus_file), str(LONG)]) == 0
    row = corpus_file.read_text().splitlines()[1].split(",")
    codes = np.array(row[3].split(), dtype=np.int64).reshape(int(row[2]), -1)  # codes per frame = codes / length
    assert codes.shape == (pose.frames, 2)
    assert np.array_equal(codes, encode(model, LONG, quantizers=2))
    assert np.array_equal(codes, encode(model, LONG)[:, :2])  # the first 2 of the 4 codes
    assert main(["decode", "--model", str(checkpoint), "--output", str(tmp_path / "p"), str(corpus_file)]) == 0
    recon, _ = reconstruct_array(model, pose.data, pose.mask, quantizers=2)
    placed = placed_pose(recon, pose.fps).body.data
    np.testing.assert_allclose(read(tmp_path / "p" / "essen.pose").body.data, placed, atol=1e-3)
    assert main(["reconstruct", "--model", str(checkpoint), "--quantizers", "2", "--output", str(tmp_path / "r"),
                 str(LONG)]) == 0
    expected = reconstruct_file(model, LONG, quantizers=2).body.data
    np.testing.assert_allclose(read(tmp_path / "r" / "essen.pose").body.data, expected, atol=1e-3)
    with caplog.at_level(logging.ERROR):
        assert main(["encode", "--model", str(checkpoint), "--quantizers", "5", "--output", str(tmp_path / "x.csv"),
                     str(LONG)]) == 2
    assert "--quantizers 5: this model keeps 1 to 4" in caplog.text and not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    "codes, problem",
    [
        (np.array([[0], [1000]]), "out of range"),
        (np.array([[-1], [3]]), "out of range"),
        (np.zeros((5, 2), dtype=np.int64), "shape"),
        (np.zeros((2, 3, 1), dtype=np.int64), "shape"),
        (np.zeros((0, 1), dtype=np.int64), "shape"),
        (np.full((4, 1), 0.5), "dtype"),
    ],
)
def test_bad_codes_are_a_user_error_naming_the_file(tmp_path, caplog, codes, problem):
    checkpoint = make_checkpoint(tmp_path / "model.ckpt")  # one codebook of 1,000 codes
    path = tmp_path / "bad.npy"
    np.save(path, codes)
    with pytest.raises(UserError, match=problem) as error:
        decode_codes(load_model(checkpoint), np.load(path), 25.0, str(path))
    assert str(path) in str(error.value)
    with caplog.at_level(logging.ERROR):
        assert main(["decode", "--model", str(checkpoint), "--fps", "25", "--output", str(tmp_path / "o"), str(path)]) == 2
    assert str(path) in caplog.text and problem in caplog.text
    assert not (tmp_path / "o" / "bad.pose").exists()


def test_not_a_npy_file_names_the_file(tmp_path, caplog):
    checkpoint = make_checkpoint(tmp_path / "model.ckpt")
    path = tmp_path / "junk.npy"
    path.write_bytes(b"not numpy")
    with caplog.at_level(logging.ERROR):
        assert main(["decode", "--model", str(checkpoint), "--fps", "25", "--output", str(tmp_path / "o"), str(path)]) == 2
    assert str(path) in caplog.text
    assert sum(str(path) in record.getMessage() for record in caplog.records) == 1  # said once, not twice


def test_checkpoint_that_does_not_match_its_config_is_a_user_error(tmp_path, caplog):
    good = read_checkpoint(make_checkpoint(tmp_path / "good.ckpt"))
    good["hyper_parameters"]["config"]["model"]["d_model"] = 64  # the state is for d_model 32
    bad = tmp_path / "bad.ckpt"
    torch.save(good, bad)
    with pytest.raises(UserError, match="does not match") as error:
        load_model(bad)
    assert str(bad) in str(error.value)
    with caplog.at_level(logging.ERROR):
        assert main(["reconstruct", "--model", str(bad), "--output", str(tmp_path / "o"), str(LONG)]) == 2
    assert str(bad) in caplog.text
    missing = tmp_path / "nothing"
    with caplog.at_level(logging.ERROR):
        assert main(["encode", "--model", str(missing), "--output", str(tmp_path / "o"), str(LONG)]) == 2
    assert str(missing) in caplog.text


def test_non_holistic_input_is_a_user_error_naming_the_file(tmp_path, data_dir, caplog):
    checkpoint = make_checkpoint(tmp_path / "model.ckpt")
    openpose = data_dir / OPENPOSE
    for stage in ("encode", "reconstruct", "repair"):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            code = main([stage, "--model", str(checkpoint), "--output", str(tmp_path / stage), str(openpose), str(LONG)])
        assert code == 2
        assert str(openpose) in caplog.text and "not MediaPipe Holistic" in caplog.text
        assert len(list((tmp_path / stage).iterdir())) == 1  # the good file is still written


def test_inference_imports_no_wandb_or_video_library(trained, tmp_path):
    script = f"""
import sys
from sign_vq.cli import main
assert main(["encode", "--model", {str(trained.model)!r}, "--output", {str(tmp_path / "c")!r}, {str(LONG)!r}]) == 0
assert main(["reconstruct", "--model", {str(trained.model)!r}, "--output", {str(tmp_path / "r")!r}, {str(LONG)!r}]) == 0
loaded = sorted(m for m in ("wandb", "cv2", "imageio") if m in sys.modules)
assert not loaded, loaded
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "r" / "essen.pose").exists()


def test_colliding_output_names_are_refused(tmp_path):
    a, b = tmp_path / "a" / "x.pose", tmp_path / "b" / "x.pose"
    for f in (a, b):
        f.parent.mkdir()
        f.write_bytes(LONG.read_bytes())
    with pytest.raises(UserError, match="collides"):
        collect_inputs([a, b], ".pose")
    assert [stem for _, stem in collect_inputs([tmp_path], ".pose")] == [Path("a/x"), Path("b/x")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_device_is_a_user_error(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "model.ckpt")
    assert main(["encode", "--model", str(checkpoint), "--device", "cuda", "--output", str(tmp_path), str(LONG)]) == 2
    with pytest.raises(UserError, match="--device nonsense"):
        load_on(checkpoint, "nonsense")


def test_encode_and_decode_of_a_folder_skip_a_fifo_and_report_it(tmp_path):
    """A FIFO named like an input blocks whoever opens it: reported and skipped, the rest written (run as commands,
    bounded, so a hang fails)."""
    checkpoint = make_checkpoint(tmp_path / "model.ckpt")
    poses, codes, decoded = tmp_path / "poses", tmp_path / "codes", tmp_path / "decoded"
    poses.mkdir()
    codes.mkdir()
    (poses / "essen.pose").symlink_to(LONG)
    os.mkfifo(poses / "fifo.pose")
    os.mkfifo(codes / "fifo.npy")  # beside the codes encode writes
    for stage, source, output, suffix, extra in (("encode", poses, codes, ".npy", []),
                                                 ("decode", codes, decoded, ".pose", ["--fps", "25"])):
        command = [sys.executable, "-m", "sign_vq.cli", stage, "--model", str(checkpoint), *extra,
                   "--output", str(output), str(source)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and "not a regular file" in result.stderr, result.stderr[-2000:]
        assert [p.name for p in output.iterdir() if p.is_file()] == [f"essen{suffix}"]

"""Preprocessing of single `.pose` files: validation, reduction, wrist correction, normalization, outliers.

Expectations come from pose-format (``Pose.read``, ``reduce_holistic``, ``correct_wrists``) and real files
(conftest: examples + tests/data, and the corpus of SIGN_VQ_CORPUS), never from hard-coded outputs of our own code.
"""

from __future__ import annotations

import numpy as np
import pytest
from pose_format.pose_header import PoseHeader
from pose_format.utils.generic import correct_wrists as upstream_correct_wrists
from pose_format.utils.generic import reduce_holistic
from pose_format.utils.reader import BufferReader

from conftest import (
    BAD_REAL,
    FULL_468,
    FULL_478,
    HANDS_ONLY,
    OPENPOSE,
    OUTLIER_FILES,
    pose_bytes,
    read_pose,
    relative,
    with_body,
)
from sign_vq.errors import BadPoseError
from sign_vq.poses import preprocess, skeleton

F16_REL = 2.0**-11  # float16 round-to-nearest: relative error at most half an ulp
F16_ABS = 2.0**-24  # and absolute error at most this below the normal range


F32_SLACK = 2.0**-21  # a few float32 roundings of the intermediate (data - center) / scale


def f16_tolerance(normalized: np.ndarray, scale: float, center: np.ndarray | None = None) -> np.ndarray:
    """Largest difference, in original units, that float16 storage of ``normalized`` values can cause.

    Plus a few float32 roundings of the original coordinates (about ``|center| + |value|``) for the intermediate.
    """
    magnitude = np.abs(normalized.astype(np.float64)) * scale
    offset = 0.0 if center is None else np.abs(center)
    return magnitude * F16_REL + scale * F16_ABS + F32_SLACK * (magnitude + offset) + 1e-9


def reference(path):
    """pose-format's reduction + (correctly used) wrist correction: data and confidence of person 0."""
    pose = upstream_correct_wrists(reduce_holistic(read_pose(path)))
    return np.asarray(pose.body.data.data[:, 0], np.float64), np.asarray(pose.body.confidence[:, 0]), pose


def assert_one_line(error: BadPoseError, path) -> str:
    message = str(error)
    assert "\n" not in message, message
    assert str(path) in message, message
    return message


# ----------------------------------------------------------------------------------------------- real files


def test_every_good_real_file_normalizes(good_files):
    """All good real files: float16 (T,178,3) + bool (T,178) mask, frames and fps exactly those of the file."""
    fps_seen = set()
    problems = []
    for path in good_files:
        pose = preprocess.preprocess_file(path)
        original = read_pose(path)
        frames = original.body.data.shape[0]
        fps_seen.add(round(float(original.body.fps), 3))
        if pose.data.dtype != np.float16 or pose.data.shape != (frames, skeleton.NUM_POINTS, skeleton.DIMS):
            problems.append(f"{path}: data {pose.data.dtype} {pose.data.shape}, expected float16 ({frames}, 178, 3)")
        if pose.mask.dtype != bool or pose.mask.shape != (frames, skeleton.NUM_POINTS):
            problems.append(f"{path}: mask {pose.mask.dtype} {pose.mask.shape}")
        if pose.fps != float(original.body.fps) or pose.info()["fps"] != pose.fps:
            problems.append(f"{path}: fps {pose.fps} != {original.body.fps}")
        if pose.frames != frames or pose.info()["frames"] != frames:
            problems.append(f"{path}: {pose.frames} frames, the file has {frames}")
        if not np.isfinite(pose.data).all() or (pose.data[pose.mask] != 0).any():
            problems.append(f"{path}: non-finite values or non-zero masked values")
        if (pose.width, pose.height) != (original.header.dimensions.width, original.header.dimensions.height):
            problems.append(f"{path}: frame size {pose.width}x{pose.height}")
    assert not problems, "\n".join(problems)
    assert {29.89, 29.97, 25.0, 24.0} <= fps_seen  # non-integer frame rates are among them


def test_output_matches_pose_format_reduction(good_files):
    """Our 178 points are pose-format's reduce_holistic (+ correct_wrists) in original units, up to float16."""
    assert [(c.name, c.points) for c in reduce_holistic(read_pose(good_files[0])).header.components] == [
        (c.name, c.points) for c in skeleton.canonical_header().components
    ]
    problems = []
    for path in good_files:
        pose = preprocess.preprocess_file(path)
        ref_data, ref_conf, _ = reference(path)
        missing = ~(ref_conf > 0) | ~np.isfinite(ref_conf)  # 0, negative (some gss files), NaN or inf
        if (missing & ~pose.mask).any():
            problems.append(f"{path}: a point with confidence 0 or below is not masked")
        if int((pose.mask & ~missing).sum()) != pose.outliers:
            problems.append(f"{path}: masked seen points {int((pose.mask & ~missing).sum())} != outliers {pose.outliers}")
        seen = ~pose.mask
        back = pose.denormalize(pose.data)
        error = np.abs(back - ref_data)[seen]
        allowed = f16_tolerance(pose.data, pose.scale, pose.center)[seen]
        if not (error <= allowed).all():
            problems.append(f"{path}: denormalized differs from pose-format by up to {error.max():.4g}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (OPENPOSE, ["2-D points where 3-D", "pose_keypoints_2d(25, XYC)", "not MediaPipe Holistic", "expected MediaPipe"]),
        *[
            (hands, ["missing component(s) POSE_LANDMARKS, FACE_LANDMARKS, LEFT_HAND_LANDMARKS",
                     "found RIGHT_HAND_LANDMARKS(21, XYZC)", "expected MediaPipe"])
            for hands in HANDS_ONLY
        ],
    ],
)
def test_real_wrong_files_are_rejected_with_their_reason(data_dir, name, reason):
    path = data_dir / name
    with pytest.raises(BadPoseError) as caught:
        preprocess.preprocess_file(path)
    message = assert_one_line(caught.value, path)
    for part in reason:
        assert part in message, message


def test_bad_real_files_are_exactly_the_known_ones(all_files):
    rejected = []
    for path in all_files:
        try:
            preprocess.preprocess_file(path)
        except BadPoseError:
            rejected.append(relative(path))
    assert sorted(rejected) == sorted(BAD_REAL)


def test_face_468_478_and_reduced_files_all_give_178_points(all_files, data_dir):
    by_face = {}
    for path in all_files:
        header = PoseHeader.read(BufferReader(path.read_bytes()))
        faces = [len(c.points) for c in header.components if c.name == skeleton.FACE]
        if faces:
            by_face.setdefault(faces[0], path)
    assert {468, 478, 128} <= set(by_face), by_face
    for size in (468, 478, 128):
        pose = preprocess.preprocess_file(by_face[size])
        assert pose.data.shape[1:] == (178, 3), (size, by_face[size])
    for name, size in ((FULL_468, 468), (FULL_478, 478)):
        header = PoseHeader.read(BufferReader((data_dir / name).read_bytes()))
        assert [len(c.points) for c in header.components if c.name == skeleton.FACE] == [size]


def test_reduced_lexicon_files_equal_pose_format_reduction(lexicon_files):
    assert len(lexicon_files) == 4
    for path in lexicon_files:
        original = read_pose(path)
        assert sum(len(c.points) for c in original.header.components) == 178
        pose = preprocess.preprocess_file(path, fix_wrists=False)
        reduced = reduce_holistic(original)
        raw = np.asarray(reduced.body.data.data[:, 0], np.float64)
        assert np.array_equal(pose.mask, reduced.body.confidence[:, 0] == 0)
        seen = ~pose.mask
        error = np.abs(pose.denormalize(pose.data) - raw)[seen]
        assert (error <= f16_tolerance(pose.data, pose.scale, pose.center)[seen]).all(), path


# ------------------------------------------------------------------------------------------ wrist correction


@pytest.mark.parametrize("name", [FULL_468, FULL_478])
def test_body_wrists_become_hand_wrists_where_the_hand_was_seen(data_dir, name):
    path = data_dir / name
    ours = preprocess.preprocess_file(path)
    plain = preprocess.preprocess_file(path, fix_wrists=False)
    reduced = reduce_holistic(read_pose(path))
    raw = np.asarray(reduced.body.data.data[:, 0], np.float64)
    conf = np.asarray(reduced.body.confidence[:, 0])
    for side in ("left", "right"):
        body, hand = skeleton.BODY_WRIST[side], skeleton.HAND_WRIST[side]
        seen = conf[:, hand] > 0
        assert seen.any() and (~seen).any(), f"{name}: {side} hand should be seen in some frames, not all"
        # the fix must matter: the body model's wrist differs from the hand model's wrist in the raw file
        assert (np.abs(raw[seen, body] - raw[seen, hand]).max(axis=-1) > 1.0).any()
        # seen: normalized body wrist == normalized hand wrist (same value, same float16 rounding)
        np.testing.assert_allclose(
            ours.data[seen, body].astype(np.float64), ours.data[seen, hand].astype(np.float64),
            rtol=2 * F16_REL, atol=F16_ABS,
        )
        assert not ours.mask[seen, body].any()
        # ... which is the hand model's wrist in original coordinates
        back = ours.denormalize(ours.data)
        assert (np.abs(back[seen, body] - raw[seen, hand]) <= f16_tolerance(ours.data[seen, body], ours.scale, ours.center)).all()
        # not seen: the body wrist is left exactly as without the correction
        assert np.array_equal(ours.data[~seen, body], plain.data[~seen, body])
        assert np.array_equal(ours.mask[~seen, body], plain.mask[~seen, body])
        assert (np.abs(back[~seen, body] - raw[~seen, body]) <= f16_tolerance(ours.data[~seen, body], ours.scale, ours.center)).all()
    # the correction changes nothing but the two body wrists
    others = np.ones(skeleton.NUM_POINTS, bool)
    others[list(skeleton.BODY_WRIST.values())] = False
    assert np.array_equal(ours.data[:, others], plain.data[:, others])
    assert np.array_equal(ours.mask[:, others], plain.mask[:, others])
    # shoulders are untouched, hence the same normalization
    np.testing.assert_array_equal(ours.center, plain.center)
    assert ours.scale == plain.scale


def test_upstream_correct_wrists_without_its_return_value_does_nothing(full_holistic_file):
    """Upstream sign-vq calls ``correct_wrists(pose)`` and drops the returned copy: the pose stays as it was."""
    pose = reduce_holistic(read_pose(full_holistic_file))
    before_data = pose.body.data.data.copy()
    before_conf = pose.body.confidence.copy()
    upstream_correct_wrists(pose)  # the upstream bug: the corrected copy is discarded
    assert np.array_equal(pose.body.data.data, before_data)
    assert np.array_equal(pose.body.confidence, before_conf)

    corrected = upstream_correct_wrists(pose)  # what was meant
    wrists = [skeleton.BODY_WRIST["left"], skeleton.BODY_WRIST["right"]]
    assert not np.array_equal(corrected.body.data.data[:, 0, wrists], before_data[:, 0, wrists])

    ours = preprocess.preprocess_file(full_holistic_file)
    back = ours.denormalize(ours.data)
    seen = ~ours.mask
    allowed = f16_tolerance(ours.data, ours.scale, ours.center)
    fixed = np.asarray(corrected.body.data.data[:, 0], np.float64)
    assert (np.abs(back - fixed)[seen] <= allowed[seen]).all()  # ours == the meant correction
    buggy = before_data[:, 0].astype(np.float64)
    assert (np.abs(back - buggy)[seen] > allowed[seen]).any()  # ours != upstream's actual (uncorrected) result


# --------------------------------------------------------------------------------------------- normalization


def test_shoulders_are_centred_and_unit_width(good_files):
    problems = []
    for path in good_files:
        pose = preprocess.preprocess_file(path)
        both = ~pose.mask[:, skeleton.LEFT_SHOULDER] & ~pose.mask[:, skeleton.RIGHT_SHOULDER]
        left = pose.data[both, skeleton.LEFT_SHOULDER].astype(np.float64)
        right = pose.data[both, skeleton.RIGHT_SHOULDER].astype(np.float64)
        middle = ((left + right) / 2).mean(axis=0)
        width = np.linalg.norm((left - right)[:, :2], axis=-1).mean()
        if not (np.abs(middle) < 2e-3).all() or abs(width - 1) > 2e-3:
            problems.append(f"{path}: shoulder midpoint {middle}, width {width}")
    assert not problems, "\n".join(problems)


def test_center_and_scale_are_the_original_shoulder_frame(full_holistic_file):
    pose = preprocess.preprocess_file(full_holistic_file)
    ref_data, ref_conf, _ = reference(full_holistic_file)
    both = (ref_conf[:, skeleton.LEFT_SHOULDER] > 0) & (ref_conf[:, skeleton.RIGHT_SHOULDER] > 0)
    left, right = ref_data[both, skeleton.LEFT_SHOULDER], ref_data[both, skeleton.RIGHT_SHOULDER]
    np.testing.assert_allclose(pose.center, ((left + right) / 2).mean(axis=0), rtol=1e-9)
    assert pose.scale == pytest.approx(np.linalg.norm((left - right)[:, :2], axis=-1).mean(), rel=1e-9)
    info = pose.info()
    assert info["center"] == pytest.approx(list(pose.center)) and info["scale"] == pose.scale
    # masked array view: masked exactly where the mask says
    masked = pose.masked()
    assert masked.dtype == np.float16 and np.array_equal(np.ma.getmaskarray(masked).any(-1), pose.mask)


# ------------------------------------------------------------------------------------------------- outliers


def test_far_away_hands_in_gss_are_masked_and_counted(data_dir):
    with_outliers = {}
    for path in sorted((data_dir / "fingerspelling" / "gss").glob("*.pose")):
        pose = preprocess.preprocess_file(path)
        if pose.outliers:
            with_outliers[path] = pose
    assert sorted(map(relative, with_outliers)) == [f for f in OUTLIER_FILES if (data_dir / f).exists()]
    for path, pose in with_outliers.items():
        unlimited = preprocess.preprocess_file(path, outlier_limit=np.inf)
        assert unlimited.outliers == 0
        newly = pose.mask & ~unlimited.mask
        assert int(newly.sum()) == pose.outliers
        far = np.abs(unlimited.data[newly].astype(np.float64)).max(axis=-1)
        assert (far >= preprocess.DEFAULT_OUTLIER_LIMIT * (1 - F16_REL)).all()
        # thousands of pixels away from the shoulders
        assert far.max() * pose.scale > 1000
        right_hand = np.zeros(skeleton.NUM_POINTS, bool)
        right_hand[skeleton.PARTS["right_hand"]] = True
        right_hand[skeleton.BODY_WRIST["right"]] = True  # it took the far-away hand's wrist
        assert right_hand[np.nonzero(newly)[1]].all(), "only the right hand should be the outlier"
        assert (pose.data[newly] == 0).all()


def test_normal_files_have_no_outliers(good_files):
    counts = {relative(p): preprocess.preprocess_file(p).outliers for p in good_files}
    nonzero = {k: v for k, v in counts.items() if v}
    assert nonzero and set(nonzero) == set(OUTLIER_FILES) & set(counts), nonzero


def test_outlier_limit_is_configurable(data_dir):
    path = data_dir / FULL_468
    assert preprocess.preprocess_file(path).outliers == 0
    tight = preprocess.preprocess_file(path, outlier_limit=0.5)
    assert tight.outliers > 0
    assert (np.abs(tight.data[~tight.mask].astype(np.float64)) <= 0.5 * (1 + F16_REL)).all()


# -------------------------------------------------------------------------------- synthetic bad files


def write(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def rejected(path, *parts: str) -> str:
    with pytest.raises(BadPoseError) as caught:
        preprocess.preprocess_file(path)
    message = assert_one_line(caught.value, path)
    for part in parts:
        assert part in message, message
    return message


def test_empty_file(tmp_path):
    rejected(write(tmp_path, "empty.pose", b""), "empty file (0 bytes)", "expected a .pose file")


def test_missing_file(tmp_path):
    rejected(tmp_path / "absent.pose", "cannot read", "expected a readable .pose file")


@pytest.mark.parametrize("name", [FULL_468, "lexicon/essen.pose"])  # v0.2 and v0.1 files
def test_truncated_file(tmp_path, data_dir, name):
    real = (data_dir / name).read_bytes()
    path = write(tmp_path, "half.pose", real[: len(real) // 2])
    message = rejected(path, "truncated", "header announces")
    frames = read_pose(data_dir / name).body.data.shape[0]
    assert f"{frames} frames" in message


def test_file_cut_inside_the_header(tmp_path, data_dir):
    real = (data_dir / FULL_468).read_bytes()
    rejected(write(tmp_path, "cut.pose", real[:100]), "not a readable .pose file", "expected a pose-format")


@pytest.mark.parametrize("seed", range(5))
def test_garbage_bytes(tmp_path, seed):
    garbage = np.random.default_rng(seed).bytes(4096)
    rejected(write(tmp_path, f"garbage{seed}.pose", garbage), "not a readable .pose file", "expected a pose-format")


def test_all_zero_bytes(tmp_path):
    rejected(write(tmp_path, "zeros.pose", bytes(256)), "not a readable .pose file")


def test_text_file(tmp_path):
    rejected(write(tmp_path, "notes.pose", b"this is not a pose\n" * 20), "not a readable .pose file")


def test_zero_frames(tmp_path, full_holistic_file):
    pose = read_pose(full_holistic_file)
    empty = with_body(pose, pose.body.data.data[:0], pose.body.confidence[:0])
    rejected(write(tmp_path, "zero.pose", pose_bytes(empty)), "zero frames", "expected at least one frame")


def test_no_body(tmp_path, full_holistic_file):
    pose = read_pose(full_holistic_file)
    confidence = pose.body.confidence.copy()
    for point in ("LEFT_SHOULDER", "RIGHT_SHOULDER"):
        confidence[:, :, pose.header.get_point_index(skeleton.BODY, point)] = 0
    path = write(tmp_path, "nobody.pose", pose_bytes(with_body(pose, pose.body.data.data, confidence)))
    rejected(path, "no body", "shoulders are never detected", f"in {len(confidence)} frames", "expected")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values(tmp_path, full_holistic_file, value):
    pose = read_pose(full_holistic_file)
    data = pose.body.data.data.copy()
    confidence = pose.body.confidence.copy()
    point = pose.header.get_point_index(skeleton.BODY, "LEFT_ELBOW")
    confidence[3, 0, point] = 1
    data[3, 0, point, 1] = value
    path = write(tmp_path, "nonfinite.pose", pose_bytes(with_body(pose, data, confidence)))
    rejected(path, "NaN/inf", "1 point(s)", "first: frame 3", "expected finite values")


def test_non_finite_values_of_missing_points_are_ignored(tmp_path, full_holistic_file):
    pose = read_pose(full_holistic_file)
    data = pose.body.data.data.copy()
    confidence = pose.body.confidence.copy()
    point = pose.header.get_point_index(skeleton.BODY, "LEFT_ELBOW")
    confidence[3, 0, point] = 0
    data[3, 0, point] = np.nan
    path = write(tmp_path, "masked_nan.pose", pose_bytes(with_body(pose, data, confidence)))
    out = preprocess.preprocess_file(path)
    assert np.isfinite(out.data).all() and out.mask[3, skeleton.canonical_header().get_point_index(skeleton.BODY, "LEFT_ELBOW")]


def test_zero_fps(tmp_path, full_holistic_file):
    pose = read_pose(full_holistic_file)
    pose.body.fps = 0.0
    rejected(write(tmp_path, "nofps.pose", pose_bytes(pose)), "invalid fps", "expected a positive frame rate")


# ---------------------------------------------------------------------------- hostile values (issue 13)

HOSTILE_BASE = "lexicon/kleine.pose"  # a real 68-frame recording, stretched to 97 frames below
HOSTILE_FRAMES = 97
GLITCH = 40  # the frame that gets the glitch


def hostile_pose(data_dir, tmp_path, change=None, name: str = "hostile.pose"):
    """The base recording stretched to 97 frames, ``change(data, confidence, index)`` applied, written to a file.

    ``data`` is frames x points x 3 and ``confidence`` frames x points (person 0, editable); ``index(component,
    point)`` gives a point's index in the file.
    """
    pose = read_pose(data_dir / HOSTILE_BASE)
    order = np.arange(HOSTILE_FRAMES) % pose.body.data.shape[0]
    data = np.array(pose.body.data.data[order], dtype=np.float32)
    confidence = np.array(pose.body.confidence[order], dtype=np.float32)
    if change is not None:
        change(data[:, 0], confidence[:, 0], pose.header.get_point_index)
    path = tmp_path / name
    path.write_bytes(pose_bytes(with_body(pose, data, confidence)))
    return path


def moved(points: tuple[str, ...], value: float):
    """A change that puts the x of ``points`` (of the body) at ``value`` pixels in the glitch frame."""

    def change(data, confidence, index):
        for point in points:
            data[GLITCH, index(skeleton.BODY, point), 0] = value

    return change


@pytest.mark.parametrize(
    "points, value",
    [(("LEFT_SHOULDER",), 1e4), (("LEFT_SHOULDER",), 3e38), (("LEFT_SHOULDER", "RIGHT_SHOULDER"), 1e4)],
)
def test_one_glitched_frame_moves_neither_centre_nor_scale(data_dir, tmp_path, points, value):
    """One shoulder (or both) far away in 1 of 97 frames: the shoulder frame changes by < 1 %, the pose is intact."""
    clean = preprocess.preprocess_file(hostile_pose(data_dir, tmp_path, name="clean.pose"))
    pose = preprocess.preprocess_file(hostile_pose(data_dir, tmp_path, moved(points, value)))
    assert abs(pose.scale / clean.scale - 1) < 0.01, (pose.scale, clean.scale)
    assert np.linalg.norm(pose.center[:2] - clean.center[:2]) / clean.scale < 0.01, (pose.center, clean.center)
    assert pose.outliers == clean.outliers + len(points)  # the glitched points are masked and counted
    glitched = [skeleton.canonical_header().get_point_index(skeleton.BODY, p) for p in points]
    assert pose.mask[GLITCH, glitched].all() and np.isfinite(pose.data).all()
    same = ~pose.mask & ~clean.mask
    assert np.abs(pose.data[same].astype(np.float64) - clean.data[same]).max() < 0.02  # not collapsed, not shifted


@pytest.mark.parametrize("value", [-0.5, np.nan, np.inf, -np.inf])
def test_negative_or_non_finite_confidence_is_missing(data_dir, tmp_path, value):
    def change(data, confidence, index):
        elbow = index(skeleton.BODY, "LEFT_ELBOW")
        confidence[3, elbow] = value
        data[3, elbow] = np.nan  # what a point without a detection may hold: not an error once it is missing

    pose = preprocess.preprocess_file(hostile_pose(data_dir, tmp_path, change))
    assert pose.mask[3, skeleton.canonical_header().get_point_index(skeleton.BODY, "LEFT_ELBOW")]
    assert np.isfinite(pose.data).all()


def test_shoulders_with_negative_confidence_are_no_body(data_dir, tmp_path):
    def change(data, confidence, index):
        confidence[:, [index(skeleton.BODY, "LEFT_SHOULDER"), index(skeleton.BODY, "RIGHT_SHOULDER")]] = -1

    rejected(hostile_pose(data_dir, tmp_path, change), "no body", f"in {HOSTILE_FRAMES} frames")


def test_values_beyond_float16_are_masked_and_counted_never_inf(data_dir, tmp_path):
    """With no outlier limit, a point 10^9 px away (10^7 shoulder widths, float16 tops at 65504) is still masked."""
    path = hostile_pose(data_dir, tmp_path, moved(("LEFT_HIP",), 1e9))
    clean = preprocess.preprocess_file(hostile_pose(data_dir, tmp_path, name="clean.pose"), outlier_limit=np.inf)
    pose = preprocess.preprocess_file(path, outlier_limit=np.inf)
    assert np.isfinite(pose.data).all() and np.abs(pose.data).max() <= preprocess.FLOAT16_MAX
    assert pose.outliers == clean.outliers + 1
    assert pose.mask[GLITCH, skeleton.canonical_header().get_point_index(skeleton.BODY, "LEFT_HIP")]


def few_shoulders(data, confidence, index):
    """Shoulders seen in frames 10 and 60 only (of 97)."""
    shoulders = [index(skeleton.BODY, "LEFT_SHOULDER"), index(skeleton.BODY, "RIGHT_SHOULDER")]
    hidden = np.setdiff1d(np.arange(len(confidence)), [10, 60])
    confidence[hidden[:, None], shoulders] = 0


def test_shoulders_seen_in_two_frames_set_the_shoulder_frame(data_dir, tmp_path):
    path = hostile_pose(data_dir, tmp_path, few_shoulders)
    pose = preprocess.preprocess_file(path)
    raw = read_pose(path).body.data.data[[10, 60], 0].astype(np.float64)
    left = raw[:, read_pose(path).header.get_point_index(skeleton.BODY, "LEFT_SHOULDER")]
    right = raw[:, read_pose(path).header.get_point_index(skeleton.BODY, "RIGHT_SHOULDER")]
    np.testing.assert_allclose(pose.center, ((left + right) / 2).mean(axis=0), rtol=1e-9)
    assert pose.scale == pytest.approx(np.linalg.norm((left - right)[:, :2], axis=-1).mean(), rel=1e-9)
    assert pose.frames == HOSTILE_FRAMES and np.isfinite(pose.data).all()


def test_usual_frames_leave_out_glitches_and_keep_real_motion():
    width = np.array([100.0, 104, 98, 5000, 101, 30, 60])  # a glitch (50x) and a sideways turn (0.3x, 0.6x)
    middle = np.zeros((7, 3))
    middle[2, 0] = 250  # 2.5 widths from the others: a glitch of the whole body
    assert preprocess.usual_frames(width, middle).tolist() == [True, True, False, False, True, True, True]
    scattered = np.array([[0, 1000, 0], [1000, 0, 0], [2000, 2000, 0], [3000, 500, 0]], dtype=float)
    assert preprocess.usual_frames(np.full(4, 100.0), scattered).all()  # no centre to trust: widths decide

"""The metric formulas on small arrays with known answers."""

from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sign_vq.evaluation import metrics as metrics_module
from sign_vq.evaluation import names
from sign_vq.evaluation.metrics import (
    FLOAT16_BITS_PER_FRAME,
    ReconstructionMetrics,
    codebook_stats,
    dtw_distances,
    dtw_point_costs,
    dtwp,
    metrics_table,
    ndtwp,
    signing_span,
    trivial_reference,
)
from sign_vq.poses import skeleton

T, P = 6, skeleton.NUM_POINTS
needs_dtw = pytest.mark.skipif(importlib.util.find_spec("tslearn") is None, reason="tslearn (the quality extra) missing")


def moving_pose(frames: int = T) -> torch.Tensor:
    """1 x T x 178 x 3: every point moves along x by 0.1 shoulder widths per frame."""
    pose = torch.zeros(1, frames, P, 3, dtype=torch.float64)
    pose[..., 0] = 0.1 * torch.arange(frames, dtype=torch.float64)[None, :, None]
    return pose


def all_observed(frames: int = T) -> torch.Tensor:
    return torch.ones(1, frames, P, dtype=torch.bool)


def test_trivial_reference_is_each_poses_mean_over_its_observed_frames():
    pose = moving_pose()
    observed = all_observed()
    observed[0, 0] = False  # frame 0 (x = 0) does not count
    mean = trivial_reference(pose, observed)
    assert mean.shape == pose.shape
    assert torch.allclose(mean[..., 0], torch.full_like(mean[..., 0], 0.1 * (1 + 2 + 3 + 4 + 5) / 5))


def test_per_part_error_and_reference_ratio():
    target = moving_pose()
    recon = target.clone()
    recon[..., skeleton.PARTS["left_hand"], 1] += 0.3  # only the left hand is off, by 0.3 shoulder widths
    metrics = ReconstructionMetrics(codebook_size=10, bits_per_frame=math.log2(10))
    metrics.update(recon, target, all_observed())
    result = metrics.compute()
    reference = sum(abs(0.1 * t - 0.25) for t in range(T)) / T  # |x - mean x|, mean x = 0.25
    for part in skeleton.PARTS:
        assert result[f"reference_{part}"] == pytest.approx(reference)
    assert result["error_left_hand"] == pytest.approx(0.3)
    assert result["ratio_left_hand"] == pytest.approx(0.3 / reference)
    for part in ("body", "face", "right_hand"):
        assert result[f"error_{part}"] == 0 and result[f"ratio_{part}"] == 0
    assert result["mse"] == pytest.approx(0.09 * 21 / (P * 3))
    assert result["reference_mse"] == pytest.approx(sum((0.1 * t - 0.25) ** 2 for t in range(T)) / T / 3)


def test_predicting_the_mean_scores_ratio_one_and_padding_is_ignored():
    target = moving_pose()
    padding = torch.zeros(1, T, dtype=torch.bool)
    padding[0, -2:] = True
    target[0, -2:] = 1000.0  # padded frames: never counted
    observed = all_observed() & ~padding[..., None]
    recon = trivial_reference(target, observed)
    metrics = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0)
    metrics.update(recon, target, all_observed(), padding=padding)
    result = metrics.compute()
    assert result["frames"] == T - 2
    for part in skeleton.PARTS:
        assert result[f"ratio_{part}"] == pytest.approx(1.0)
    assert result["ratio_mse"] == pytest.approx(1.0)


def test_pixel_errors_use_each_poses_shoulder_width():
    target = torch.cat([moving_pose(), moving_pose()])
    recon = target + torch.tensor([0.0, 0.5, 0.0], dtype=torch.float64)
    metrics = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0)
    metrics.update(recon, target, torch.ones(2, T, P, dtype=torch.bool), scale=torch.tensor([100.0, 300.0]))
    result = metrics.compute()
    assert result["error_body"] == pytest.approx(0.5)
    assert result["error_px_body"] == pytest.approx(0.5 * 200)  # the mean of 50 px and 150 px
    assert result["reference_px_face"] == pytest.approx(result["reference_face"] * 200)


def test_no_pixel_metrics_without_scale_and_the_module_keys_stay():
    metrics = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0)
    metrics.update(moving_pose(), moving_pose(), all_observed())
    result = metrics.compute()
    assert not any(key.startswith("error_px_") for key in result)
    for key in ("codebook_utilization", "perplexity", "mse", "bits_per_frame", "compression_ratio", "frames"):
        assert key in result


def test_jitter_of_constant_velocity_is_zero_and_acceleration_is_measured():
    target = moving_pose()
    recon = target.clone()
    recon[0, 2, :, 1] += 0.2  # one frame jumps: acceleration 0.2, 0.4, 0.2 at frames 1, 2, 3
    metrics = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0)
    metrics.update(recon, target, all_observed())
    result = metrics.compute()
    assert result["jitter_target"] == pytest.approx(0.0, abs=1e-12)
    assert result["jitter"] == pytest.approx((0.2 + 0.4 + 0.2) / (T - 2))


def test_acceleration_error_and_jitter_against_the_originals_acceleration():
    target = moving_pose()
    target[..., 1] = 0.1 * torch.arange(T, dtype=torch.float64).square()[None, :, None]  # y accelerates 0.2 a frame
    shifted = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0)
    shifted.update(target + 0.5, target, all_observed())
    result = shifted.compute()
    assert result["jitter"] == pytest.approx(0.2) and result["jitter_target"] == pytest.approx(0.2)
    assert result["ratio_jitter"] == pytest.approx(1.0) and result["accel_error"] == pytest.approx(0.0, abs=1e-12)
    doubled = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0)
    doubled.update(target * 2, target, all_observed())
    result = doubled.compute()
    assert result["ratio_jitter"] == pytest.approx(2.0) and result["accel_error"] == pytest.approx(0.2)
    assert result["ratio_accel"] == pytest.approx(1.0)


def test_dtw_distance_known_answers(monkeypatch):
    assert dtw_distances(np.array([[[0.0], [1.0], [2.0]]]), np.array([[[0.0], [2.0]]])) == pytest.approx([1.0])
    path = np.array([[[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]]])
    held = np.repeat(path, [2, 1, 3], axis=1)  # every frame held: DTW forgives it
    assert dtw_distances(held, path) == pytest.approx([0.0])
    still = np.zeros((2, 4, 3))  # 4 frames at the origin against 2 frames 5 away: 4 matched pairs of 25
    assert dtw_distances(still, np.full((2, 2, 3), [3.0, 4.0, 0.0])) == pytest.approx([10.0, 10.0])
    rng = np.random.default_rng(0)
    hyp, ref = rng.normal(size=(5, 9, 3)), rng.normal(size=(5, 7, 3))
    whole = dtw_distances(hyp, ref)
    monkeypatch.setattr(metrics_module, "DTW_CELLS", 100)  # one trajectory at a time: the same answers
    assert np.allclose(dtw_distances(hyp, ref), whole)


def arms(frames: int, raised: dict[str, range]) -> tuple[np.ndarray, np.ndarray]:
    """A T x 178 x 3 pose, every point observed: shoulders at (+-1, 0, 0), elbows at y = 1, each wrist at y = 2
    (below its elbow: image y grows downwards) except in its ``raised`` frames (y = 0)."""
    data = np.zeros((frames, P, 3))
    data[:, skeleton.LEFT_SHOULDER, 0], data[:, skeleton.RIGHT_SHOULDER, 0] = 1.0, -1.0
    for side, elbow in (("left", 2), ("right", 3)):
        data[:, elbow, 1] = 1.0
        wrist = skeleton.BODY_WRIST[side]
        data[:, wrist, 1] = 2.0
        data[list(raised.get(side, ())), wrist, 1] = 0.0
    return data, np.ones((frames, P), dtype=bool)


def test_signing_span_trims_frames_where_no_wrist_is_raised():
    assert signing_span(*arms(20, {})) == (0, 20)  # never raised: nothing trimmed
    assert signing_span(*arms(20, {"left": range(8, 12)})) == (3, 17)  # 5 frames kept on either side
    data, seen = arms(20, {"left": range(8, 12), "right": range(12, 14)})
    seen[14:, skeleton.BODY_WRIST["right"]] = False  # right wrist unseen after frame 13: its span ends there
    assert signing_span(data, seen) == (3, 17)
    assert signing_span(*arms(20, {"right": range(1, 19)})) == (0, 20)


def test_dtwp_known_answer_with_trimming_and_missing_points():
    down = np.array([0.0, 50.0, 0.0])  # the hands of the reconstruction stay at the origin
    ref, ref_seen = arms(12, {"left": range(7, 12)})  # kept: frames 2 to 11, the hands down in 2..6, up in 7..11
    ref[:7, metrics_module.HAND_POINTS] = down
    hyp, hyp_seen = arms(10, {"left": range(10)})  # kept whole: the hands always up
    # every trimmed-down frame of the original costs 50^2 once: sqrt(5 x 2500) per hand point
    assert dtwp(hyp, hyp_seen, ref, ref_seen) == pytest.approx(50 * math.sqrt(5))
    ref_seen[:, metrics_module.HAND_POINTS[0]] = False  # one point never seen: filled with (10, 10, 10)
    missing = math.sqrt(10 * 300)  # 10 frames of the hand at the origin against (10, 10, 10)
    assert dtwp(hyp, hyp_seen, ref, ref_seen) == pytest.approx((41 * 50 * math.sqrt(5) + missing) / 42)


def test_ndtwp_normalizes_each_pose_by_its_shoulders_and_fills_missing_points_with_one():
    ref, seen = arms(6, {})
    ref[:, metrics_module.HAND_POINTS, 0] = np.linspace(-1, 1, 42)
    ref[:, metrics_module.HAND_POINTS, 1] = np.arange(6)[:, None] * 0.1  # the hands move down
    hyp = ref * 3.0 + np.array([7.0, -2.0, 1.0])  # the same signing, larger and elsewhere
    assert ndtwp(hyp, seen, ref, seen) == pytest.approx(0.0, abs=1e-12)
    assert dtwp(hyp, seen, ref, seen) > 1  # DTWp is in the poses' own coordinates
    missing = seen.copy()
    missing[:, metrics_module.HAND_POINTS[-1]] = False  # normalized by width 2: the point at (0.5, 0.1 t, 0)
    expected = math.sqrt(sum((0.5 - 1) ** 2 + (0.05 * t - 1) ** 2 + 1 for t in range(6))) / 42
    assert ndtwp(hyp, seen, ref, missing) == pytest.approx(expected)


def test_reconstruction_metrics_report_dtwp_in_pixels_beside_the_trivial_reference():
    ref, seen = arms(8, {"left": range(8)})
    ref[:, metrics_module.HAND_POINTS, 0] = np.arange(8)[:, None] * 0.1  # the hands move right
    target = torch.from_numpy(ref)[None]
    recon = target.clone()
    recon[..., metrics_module.HAND_POINTS, 1] += 0.5  # half a shoulder width off
    result = ReconstructionMetrics(4, 2.0, dtw=True)
    result.update(recon, target, torch.from_numpy(seen)[None], scale=torch.tensor([100.0]), center=torch.zeros(1, 3))
    result = result.compute()
    assert result["dtwp"] == pytest.approx(50 * math.sqrt(8))  # 50 pixels in each of 8 matched frames
    assert result["ndtwp"] == pytest.approx(0.25 * math.sqrt(8))  # shoulder width 2 in these coordinates
    trivial = trivial_reference(target, torch.from_numpy(seen)[None])[0].numpy()
    assert result["reference_dtwp"] == pytest.approx(dtwp(trivial * 100, seen, ref * 100, seen))
    assert result["ratio_ndtwp"] == pytest.approx(result["ndtwp"] / ndtwp(trivial, seen, ref, seen))
    rows = {row["metric"]: row for row in metrics_table(result, 4)}
    assert rows["dtwp"]["reference"] == result["reference_dtwp"] and "ndtwp" in rows


def test_codebook_utilization_and_perplexity():
    assert codebook_stats(torch.tensor([5, 5, 0, 0])) == pytest.approx(
        {"codebook_utilization": 0.5, "perplexity": 2.0}
    )
    assert codebook_stats(torch.tensor([0, 0])) == {"codebook_utilization": 0.0, "perplexity": 0.0}
    metrics = ReconstructionMetrics(codebook_size=8, bits_per_frame=6.0)
    codes = torch.tensor([[[0, 1], [2, 3], [0, 1], [7, 7]]])  # 2 codebooks; the padded frame is not counted
    padding = torch.tensor([[False, False, False, True]])
    metrics.update(moving_pose(4), moving_pose(4), all_observed(4), codes, padding)
    result = metrics.compute()
    assert result["codebook_utilization"] == pytest.approx(4 / 8)
    assert result["perplexity"] == pytest.approx(math.exp(-(2 * (1 / 3) * math.log(1 / 3) + 2 * (1 / 6) * math.log(1 / 6))))


def test_bits_per_frame_and_compression_against_float16():
    metrics = ReconstructionMetrics(codebook_size=1000, bits_per_frame=2 * math.log2(1000))
    metrics.update(moving_pose(), moving_pose(), all_observed())
    result = metrics.compute()
    assert FLOAT16_BITS_PER_FRAME == 178 * 3 * 16
    assert result["compression_ratio"] == pytest.approx(8544 / (2 * math.log2(1000)))


def test_reset_and_accumulation_over_batches():
    metrics = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0)
    metrics.update(moving_pose() + 1.0, moving_pose(), all_observed())
    metrics.reset()
    metrics.update(moving_pose(), moving_pose(), all_observed())
    metrics.update(moving_pose() + torch.tensor([0.0, 0.0, 0.4], dtype=torch.float64), moving_pose(), all_observed())
    assert metrics.compute()["error_face"] == pytest.approx(0.2)


def test_table_rows():
    metrics = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0)
    target = moving_pose()
    metrics.update(target * 0.5, target, all_observed(), torch.zeros(1, T, 1, dtype=torch.long), scale=torch.tensor([2.0]))
    result = metrics.compute()
    rows = {row["metric"]: row for row in metrics_table(result, 4)}
    assert set(rows) == {
        "mse", "jitter", "accel_error", "codebook_utilization", "perplexity", "bits_per_frame", "handshape_left_hand",
        "handshape_right_hand", *(f"{kind}_{p}" for p in skeleton.PARTS for kind in ("error", "error_px", "motion")),
    }
    assert rows["motion_face"]["reference"] == result["reference_face"]
    assert rows["error_face"]["ratio"] == pytest.approx(result["ratio_face"])
    assert rows["codebook_utilization"] == {"metric": "codebook_utilization", "model": 0.25, "reference": 1.0, "ratio": 0.25}
    assert rows["perplexity"]["reference"] == 4
    assert rows["bits_per_frame"]["ratio"] == pytest.approx(2.0 / FLOAT16_BITS_PER_FRAME)


@needs_dtw
def test_identity_scores_zero_on_every_metric():
    metrics = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0, dtw=True)
    metrics.update(moving_pose(), moving_pose(), all_observed())
    result = metrics.compute()
    for part in skeleton.PARTS:
        for key in ("error", "motion", "dtw"):
            assert result[f"{key}_{part}"] == pytest.approx(0.0, abs=1e-12)
    for hand in ("left_hand", "right_hand"):
        assert result[f"handshape_{hand}"] == pytest.approx(0.0, abs=1e-12)


def test_a_constant_shift_costs_no_motion_and_no_handshape_error():
    target = moving_pose()
    shift = torch.tensor([0.3, -0.4, 0.0], dtype=torch.float64)  # 0.5 shoulder widths
    metrics = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0)
    metrics.update(target + shift, target, all_observed())
    result = metrics.compute()
    for part in skeleton.PARTS:
        assert result[f"error_{part}"] == pytest.approx(0.5)
        assert result[f"motion_{part}"] == pytest.approx(0.0, abs=1e-12)
        assert result[f"ratio_motion_{part}"] == pytest.approx(0.0, abs=1e-12)
    assert result["handshape_left_hand"] == pytest.approx(0.0, abs=1e-12)


def test_motion_error_against_the_motions_own_size():
    target = moving_pose()
    recon = trivial_reference(target, all_observed()).clone()  # right place, no motion at all
    metrics = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0)
    metrics.update(recon, target, all_observed())
    result = metrics.compute()
    assert result["ratio_motion_body"] == pytest.approx(1.0)
    assert result["motion_body"] == pytest.approx(result["reference_body"])


def test_handshape_error_is_measured_relative_to_the_wrist():
    target = moving_pose()
    target[..., skeleton.PARTS["right_hand"], 1] += torch.linspace(0, 1, 21, dtype=torch.float64)  # a fixed shape
    recon = target.clone()
    recon[..., skeleton.PARTS["left_hand"], :] += torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)  # whole hand moved
    recon[..., skeleton.PARTS["right_hand"].start + 5, 0] += 0.2  # one finger point off
    metrics = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0)
    metrics.update(recon, target, all_observed())
    result = metrics.compute()
    assert result["handshape_left_hand"] == pytest.approx(0.0, abs=1e-12) and result["error_left_hand"] > 2
    assert result["handshape_right_hand"] == pytest.approx(0.2 / 20)
    assert result["reference_handshape_right_hand"] == pytest.approx(0.0, abs=1e-12)  # the shape never changes


@needs_dtw
def test_dtw_of_a_time_stretched_copy_is_zero():
    reference = moving_pose(5)[0]
    stretched = reference.repeat_interleave(3, dim=0)  # every frame held three times
    seen = torch.ones(stretched.shape[:2], dtype=torch.bool)
    costs = dtw_point_costs(stretched, seen, reference, seen[:5])
    assert costs.shape == (P,) and torch.all(costs.abs() < 1e-12)
    frame_error = (stretched[::3] + 0.1 - reference).norm(dim=-1)  # unstretched and shifted: every frame costs 0.1
    assert torch.allclose(dtw_point_costs(stretched[::3] + 0.1, seen[:5], reference, seen[:5]), frame_error.sum(0))


@needs_dtw
def test_dtw_handles_missing_points_as_ham2pose():
    reference = moving_pose(4)[0] + 1.0
    ref_seen = torch.ones(4, P, dtype=torch.bool)
    ref_seen[:, 0] = False  # the original never has point 0: it costs nothing, whatever the reconstruction does
    hyp_seen = torch.ones(4, P, dtype=torch.bool)
    hyp_seen[:, 1] = False  # the reconstruction lacks point 1: half the original point's norm per frame
    hyp = reference.clone()
    hyp[:, 0] += 5.0
    costs = dtw_point_costs(hyp, hyp_seen, reference, ref_seen)
    assert costs[0] == 0
    assert costs[1] == pytest.approx(float(reference[:, 1].norm(dim=-1).sum() / 2))
    assert torch.all(costs[2:] == 0)


@needs_dtw
def test_dtw_forgives_a_delay_and_scores_the_trivial_reference_as_the_reference():
    target = moving_pose(8)
    recon = torch.cat([target[:, :1], target[:, :-1]], dim=1)  # one frame late
    metrics = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0, dtw=True)
    metrics.update(recon, target, all_observed(8))
    result = metrics.compute()
    assert result["error_body"] == pytest.approx(0.1 * 7 / 8)
    assert result["dtw_body"] == pytest.approx(0.1 / 8)  # only the last frame is unmatched
    trivial = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0, dtw=True)
    trivial.update(trivial_reference(target, all_observed(8)), target, all_observed(8))
    assert trivial.compute()["ratio_dtw_face"] == pytest.approx(1.0)


def test_part_sums_are_what_a_pose_adds_to_each_part():
    target = moving_pose()
    recon = target.clone()
    recon[..., skeleton.PARTS["left_hand"], 1] += 0.3
    observed = all_observed()
    observed[0, :2, skeleton.PARTS["left_hand"]] = False  # 2 of 6 frames of the left hand unseen
    metrics = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0)
    metrics.update(recon, target, observed)
    errors, references = metrics.part_sums(), metrics.part_sums("reference")
    assert errors["left_hand"] == pytest.approx(0.3 * 21 * 4) and errors["all"] == pytest.approx(errors["left_hand"])
    assert errors["body"] == errors["face"] == 0
    assert references["body"] == pytest.approx(metrics.compute()["reference_body"] * 8 * T)


def test_per_point_ratios():
    target = moving_pose()
    recon = trivial_reference(target, all_observed()).clone()
    recon[..., 3, :] = target[..., 3, :]  # body point 3 exact, every other point the pose mean
    observed = all_observed()
    observed[..., 7] = False  # body point 7 never seen
    metrics = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0)
    metrics.update(recon, target, observed)
    ratios = metrics.point_ratios()
    assert ratios.shape == (P,) and ratios[3] == 0 and ratios[0] == pytest.approx(1.0) and math.isnan(ratios[7])


def test_summed_states_of_two_processes_give_the_metrics_of_both_batches():
    batches = [(moving_pose() + 0.2, moving_pose(), all_observed()), (moving_pose() * 0.5, moving_pose(), all_observed())]
    together = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0)
    ranks = [ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0) for _ in batches]
    for rank, batch in zip(ranks, batches):
        together.update(*batch, torch.zeros(1, T, 1, dtype=torch.long))
        rank.update(*batch, torch.zeros(1, T, 1, dtype=torch.long))
    other = iter([value for value in vars(ranks[1]).values() if isinstance(value, torch.Tensor)])
    ranks[0].reduce(lambda value: value + next(other))  # the all-reduce of two ranks
    assert ranks[0].compute() == pytest.approx(together.compute(), nan_ok=True)


@needs_dtw
def test_every_metric_name_is_one_compute_writes_and_validation_logs_only_those():
    target = moving_pose()
    recon = target + 0.05
    result = ReconstructionMetrics(codebook_size=4, bits_per_frame=2.0, dtw=True)
    result.update(recon, target, all_observed(), scale=torch.tensor([100.0]), center=torch.zeros(1, 3))
    computed = result.compute()
    declared = names.metric_names(names.PART_KINDS, names.SCOPES) + names.metric_names(names.HAND_KINDS, names.HANDS)
    declared += names.metric_names(("reference", "ratio"), names.POSE_METRICS)
    assert set(declared) <= computed.keys()
    assert set(names.VALIDATION) <= computed.keys()
    assert names.metric_name("ratio_motion", "face") == "ratio_motion_face"
    with pytest.raises(KeyError, match="'ratio_motion' of 'left_hand_shape'"):
        names.metric_name("ratio_motion", "left_hand_shape")
    with pytest.raises(KeyError):
        names.metric_name("handshape", "body")


def metric_names_built_by_hand(source: str) -> list[str]:
    """f-strings that spell a metric's name (``f"ratio_{part}"``) instead of calling ``names.metric_name``."""
    kinds = {*names.PART_KINDS, *names.HAND_KINDS}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr) and len(node.values) > 1:
            first, second = node.values[:2]
            if (isinstance(first, ast.Constant) and isinstance(second, ast.FormattedValue)
                    and str(first.value).endswith("_") and str(first.value)[:-1] in kinds):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_metric_names_are_declared_once_in_the_names_module():
    assert metric_names_built_by_hand("x = r[f'ratio_motion_{part}']\ny = f'{part}_ratio'\n") == [
        "line 1: f'ratio_motion_{part}'"]
    root = Path(__file__).resolve().parents[1]
    found = [f"{path.relative_to(root)}: {hit}" for folder in ("sign_vq", "benchmarks")
             for path in sorted((root / folder).rglob("*.py")) for hit in metric_names_built_by_hand(path.read_text())]
    assert found == [], "metric names spelled by hand (use sign_vq.evaluation.names.metric_name):\n" + "\n".join(found)

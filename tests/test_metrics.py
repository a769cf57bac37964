"""The metric formulas on small arrays with known answers."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from sign_vq import skeleton
from sign_vq.metrics import (
    FLOAT16_BITS_PER_FRAME,
    ReconstructionMetrics,
    codebook_stats,
    dtw_point_costs,
    metrics_table,
    trivial_reference,
)

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
        "mse", "jitter", "codebook_utilization", "perplexity", "bits_per_frame", "handshape_left_hand",
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

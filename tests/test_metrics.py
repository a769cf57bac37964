"""The metric formulas on small arrays with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from sign_vq import skeleton
from sign_vq.metrics import (
    FLOAT16_BITS_PER_FRAME,
    ReconstructionMetrics,
    codebook_stats,
    masked_mse,
    metrics_table,
    trivial_reference,
)

T, P = 6, skeleton.NUM_POINTS


def moving_pose(frames: int = T) -> torch.Tensor:
    """1 x T x 178 x 3: every point moves along x by 0.1 shoulder widths per frame."""
    pose = torch.zeros(1, frames, P, 3, dtype=torch.float64)
    pose[..., 0] = 0.1 * torch.arange(frames, dtype=torch.float64)[None, :, None]
    return pose


def all_observed(frames: int = T) -> torch.Tensor:
    return torch.ones(1, frames, P, dtype=torch.bool)


def test_masked_mse_ignores_missing_points():
    target = torch.zeros(1, 2, P, 3)
    recon = torch.zeros(1, 2, P, 3)
    recon[0, 0, 0] = 100.0  # missing: ignored
    recon[0, 1, 1] = torch.tensor([1.0, 2.0, 2.0])
    observed = torch.ones(1, 2, P, dtype=torch.bool)
    observed[0, 0, 0] = False
    assert masked_mse(recon, target, observed).item() == pytest.approx(9.0 / ((2 * P - 1) * 3))


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
        "mse", "jitter", "codebook_utilization", "perplexity", "bits_per_frame",
        *(f"error_{p}" for p in skeleton.PARTS), *(f"error_px_{p}" for p in skeleton.PARTS),
    }
    assert rows["error_face"]["ratio"] == pytest.approx(result["ratio_face"])
    assert rows["codebook_utilization"] == {"metric": "codebook_utilization", "model": 0.25, "reference": 1.0, "ratio": 0.25}
    assert rows["perplexity"]["reference"] == 4
    assert rows["bits_per_frame"]["ratio"] == pytest.approx(2.0 / FLOAT16_BITS_PER_FRAME)

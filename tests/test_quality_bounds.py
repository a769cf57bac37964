"""The reference codecs of `benchmarks.quality_bounds` measure what they claim (on real poses)."""

import numpy as np
import pytest
import torch

from benchmarks.quality_bounds import Bounds, kmeans, ratios
from sign_vq.poses.preprocess import preprocess_file


@pytest.fixture(scope="module")
def poses(data_dir) -> list[np.ndarray]:
    # fingerspelling of several languages (right hand only) and whole signs (both hands)
    files = sorted((data_dir / "fingerspelling").glob("*/*.pose"))[::3][:7]
    files += sorted((data_dir / "lexicon").glob("*.pose"))[:3]
    return [preprocess_file(f).masked().astype(np.float32).filled(np.nan) for f in files]


def test_ratios_are_zero_for_the_pose_and_one_for_its_mean(poses):
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in ratios(poses, np.nan_to_num).values())

    def own_mean(window: np.ndarray) -> np.ndarray:
        return np.repeat(np.nan_to_num(np.nanmean(window, 0))[None], len(window), 0)

    assert all(v == pytest.approx(1.0, rel=1e-4) for v in ratios(poses, own_mean).values())


def test_codecs_given_everything_reproduce_their_training_poses(poses):
    bounds = Bounds(poses)
    exact = ratios(poses, bounds.static())
    assert all(v < 1e-3 for v in exact.values())  # every pose mean is in the span of the pose means
    assert all(v < 1e-3 for v in ratios(poses, bounds.motion(10_000)).values())
    nothing = ratios(poses, bounds.static(0))  # every window's mean replaced by the mean of all pose means
    assert all(nothing[part] > 0.1 for part in exact) and max(nothing.values()) > 1.0


def test_more_static_bits_cost_more_and_err_less(poses):
    bounds = Bounds(poses)
    coarse = bounds.static(distortion=bounds.static_std[0] ** 2 / 4)
    fine = bounds.static(distortion=bounds.static_std[0] ** 2 * 2.0**-16)
    assert 0 < coarse.bits < fine.bits
    assert sum(ratios(poses, fine).values()) < sum(ratios(poses, coarse).values())


def test_kmeans_finds_separated_clusters():
    generator = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(50, 2, generator=generator) for c in centres])
    found = kmeans(points, 3)
    assert torch.cdist(centres, found).min(1).values.max() < 0.1

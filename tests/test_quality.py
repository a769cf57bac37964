"""The breakdown of `benchmarks.quality`: which pose weighs most in a part, and the part without it."""

import math

import pytest
import torch

from benchmarks.quality import check_targets, heaviest, label, part_codes, part_ratio
from fixtures_model import small_model


def pose(name: str, error: float, reference: float) -> dict:
    return {"id": name, "frames": 10, "error": {"face": error}, "reference": {"face": reference}}


def test_the_heaviest_pose_its_share_and_the_ratio_of_the_rest():
    poses = [pose("a/long", 6.0, 1.0), pose("b/short", 1.0, 2.0), pose("c/short", 1.0, 2.0)]
    top, share, without = heaviest(poses, "face")
    assert top["id"] == "a/long" and share == pytest.approx(6 / 8) and without == pytest.approx(2 / 4)


def test_a_single_pose_leaves_no_ratio_and_a_part_without_error_no_share():
    assert math.isnan(heaviest([pose("a/only", 1.0, 1.0)], "face")[2])
    assert math.isnan(heaviest([pose("a/x", 0.0, 1.0), pose("b/y", 0.0, 1.0)], "face")[1])


def test_a_parts_ratio_sums_error_and_reference_over_poses_first():
    poses = [pose("a/x", 6.0, 1.0), pose("a/y", 2.0, 3.0)]
    assert part_ratio(poses, "face") == pytest.approx(8 / 4) and math.isnan(part_ratio([pose("a/z", 0.0, 0.0)], "face"))


def test_the_residual_model_is_checked_against_the_product_at_the_same_bits():
    assert [label(name) for name in ("1", "4", "none", "residual@2")] == [
        "1 codebook", "4 codebooks", "no quantizer", "residual, first 2"]
    results = {"2": {"ratio_all": 0.80}, "residual@2": {"ratio_all": 0.83}, "residual@4": {"ratio_all": 0.5}}
    assert check_targets(results) == ["MET    residual, first 2: overall within 5 % of 2 codebooks (0.830 vs 0.800)"]
    results["residual@2"]["ratio_all"] = 0.85
    assert check_targets(results)[0].startswith("MISSED residual, first 2")


def test_the_per_part_variants_are_checked_against_the_targets_of_their_bits():
    assert [label(name) for name in ("parts10", "parts40")] == ["per part, 10 bits", "per part, 40 bits"]
    parts = {f"ratio_{p}": 0.9 for p in ("body", "face", "left_hand", "right_hand")}
    motion = {f"ratio_motion_{h}": 0.3 for h in ("left_hand", "right_hand")}
    results = {"parts10": {**parts, **motion, "codebook_utilization": 0.5, "ratio_jitter": 1.0},
               "parts40": {**parts, **motion}}
    assert check_targets(results) == [
        "MET    per part, 10 bits: every part <= 1.0x", "MISSED per part, 10 bits: >= 60 % of the codes used",
        "MET    per part, 10 bits: hand motion <= 0.5x",
        "MET    per part, 10 bits: mean acceleration <= 1.2x the original's",
        "MISSED per part, 40 bits: every part <= 0.5x", "MISSED per part, 40 bits: every part <= 0.6x",
        "MET    per part, 40 bits: hand motion <= 0.4x"]


def test_a_parts_models_code_use_is_counted_per_part():
    model = small_model(quantizer="parts")  # hands 5, face 4, body 48 codes
    histogram = torch.zeros(model.codebook_size, dtype=torch.int64)
    histogram[[0, 1, 2, 3, 4, 5, 9]] = 1  # every hand code (0..4), 1 face code (5..8), 1 body code (9..56)
    assert part_codes(model, histogram) == {"hands": [1.0, 5], "face": [0.25, 4], "body": [1 / 48, 48]}
    assert part_codes(small_model(), torch.ones(1000, dtype=torch.int64)) == {}

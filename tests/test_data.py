"""Archive split, dataset sampling (crops, windows, workers, augmentation)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import EXAMPLES
from sign_vq.config import AugmentConfig, train_config
from sign_vq.dataset.archive import build_archive, split_of
from sign_vq.dataset.normalize import normalize_shard
from sign_vq.formats.posezip import PoseZip
from sign_vq.training.data import (
    PoseDataModule,
    RandomCrops,
    Windows,
    augment,
    collate,
    pose_tensors,
    shape_directions,
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("shards")
    files = sorted(EXAMPLES.rglob("*.pose"))
    normalize_shard(files[::2], root / "a.zip", root=EXAMPLES)
    normalize_shard(files[1::2], root / "b.zip", root=EXAMPLES)
    return [root / "a.zip", root / "b.zip"]


def test_split_is_by_hash_of_the_id_not_by_order(shards, tmp_path):
    build_archive(shards, tmp_path / "f.zip", 0.3)
    build_archive(shards[::-1], tmp_path / "b.zip", 0.3)
    forward, backward = PoseZip(tmp_path / "f.zip"), PoseZip(tmp_path / "b.zip")
    assert {e["id"]: e["split"] for e in forward.entries} == {e["id"]: e["split"] for e in backward.entries}
    assert all(e["split"] == split_of(e["id"], 0.3) for e in forward.entries)
    ids = [f"lang/{i}" for i in range(20000)]
    assert abs(np.mean([split_of(i, 0.1) == "val" for i in ids]) - 0.1) < 0.01
    assert {split_of(i, 0.0) for i in ids} == {"train"} and {split_of(i, 1.0) for i in ids} == {"val"}


def test_archive_streams_every_pose_unchanged(shards, tmp_path):
    build_archive(shards, tmp_path / "all.zip", 0.2)
    archive = PoseZip(tmp_path / "all.zip")
    originals = {e["id"]: (zipped, e) for zipped in map(PoseZip, shards) for e in zipped.entries}
    assert sorted(e["id"] for e in archive.entries) == sorted(originals)
    for entry in archive.entries:
        zipped, original = originals[entry["id"]]
        a, b = archive.read(entry), zipped.read(original)
        assert np.array_equal(np.ma.getmaskarray(a), np.ma.getmaskarray(b))
        assert np.array_equal(a.filled(0), b.filled(0))


NO_AUGMENT = AugmentConfig(shape=0.0, scale=0.0, rotate=0.0, shift=0.0)


def test_random_crops_are_a_pure_function_of_seed_and_index(shards):
    zipped = PoseZip(shards[0])
    one = RandomCrops(zipped, zipped.entries, 16, seed=3, length=50, augmentation=NO_AUGMENT)
    two = RandomCrops(PoseZip(shards[0]), zipped.entries, 16, 3, 50, NO_AUGMENT)
    for i in (0, 7, 49):
        assert torch.equal(one[i]["poses"], two[i]["poses"]) and one[i]["poses"].shape[0] <= 16
    assert any(not torch.equal(one[0]["poses"], one[i]["poses"]) for i in range(1, 10))


def test_augment_is_a_similarity_transform_that_keeps_missing_points_zero():
    generator = torch.Generator().manual_seed(0)  # unseeded draws failed the ratio check once
    poses = torch.randn(5, 178, 3, generator=generator)
    observed = torch.rand(5, 178, generator=generator) > 0.3
    poses[~observed] = 0
    settings = AugmentConfig(shape=0.0, scale=0.2, rotate=20.0, shift=0.1)
    out = augment({"poses": poses, "observed": observed}, np.random.default_rng(1), settings)
    again = augment({"poses": poses, "observed": observed}, np.random.default_rng(1), settings)
    assert torch.equal(out["poses"], again["poses"])
    assert (out["poses"][~observed] == 0).all()
    seen = poses[observed][:, :2]
    moved = out["poses"][observed][:, :2]
    ratio = torch.cdist(moved, moved)[0, 1:] / torch.cdist(seen, seen)[0, 1:]
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4)
    assert 0.8 <= float(ratio[0]) <= 1.25


def test_shape_augment_moves_every_frame_of_a_crop_by_one_mean_pose_offset(shards):
    zipped = PoseZip(shards[0])
    shapes = shape_directions(zipped, zipped.entries, seed=0)
    assert shapes.shape[1:] == (178, 3) and len(shapes) == min(len(zipped.entries), 178 * 3)
    assert np.array_equal(shapes, shape_directions(PoseZip(shards[0]), zipped.entries, seed=0))
    spreads = np.linalg.norm(shapes.reshape(len(shapes), -1), axis=1)
    assert spreads[0] > 0 and np.all(np.diff(spreads) <= 1e-6)  # principal directions, largest spread first
    item = pose_tensors(zipped.read(zipped.entries[0]))
    settings = replace(NO_AUGMENT, shape=1.0)
    moved = [augment(item, np.random.default_rng(seed), settings, shapes)["poses"] for seed in range(8)]
    offsets = [m - item["poses"] for m in moved if not torch.equal(m, item["poses"])]
    assert 0 < len(offsets) < 8  # about half of the crops keep their own shape
    observed = item["observed"]
    for offset in offsets:
        assert (offset[~observed] == 0).all() and offset.abs().max() > 0
        always = observed.all(0)  # points seen in every frame moved by the same offset in every frame
        assert torch.allclose(offset[:, always], offset[:1, always].expand_as(offset[:, always]), atol=1e-5)


def test_windows_cover_every_frame_and_batches_are_padded_with_a_mask(shards):
    zipped = PoseZip(shards[1])
    windows = Windows(zipped, zipped.entries, 8)
    assert sum(w["poses"].shape[0] for w in windows) == sum(e["frames"] for e in zipped.entries)
    batch = collate([windows[0], windows[len(windows) - 1]])
    lengths = (~batch["padding"]).sum(1)
    assert batch["poses"].shape[:2] == batch["padding"].shape and int(lengths.max()) == batch["poses"].shape[1]
    assert (batch["poses"][batch["padding"]] == 0).all()


def test_two_dataloader_workers_give_the_same_batches_as_none(shards, tmp_path):
    build_archive(shards, tmp_path / "all.zip", 0.2)
    batches = []
    for workers in (0, 2):
        config = train_config({"max_steps": 6, "batch_size": 3, "max_frames": 20, "num_workers": workers})
        batches.append(list(PoseDataModule(tmp_path / "all.zip", config).train_dataloader()))
    assert len(batches[0]) == len(batches[1]) == 6
    for a, b in zip(*batches):
        assert torch.equal(a["poses"], b["poses"]) and torch.equal(a["padding"], b["padding"])
    assert PoseZip(tmp_path / "all.zip").split("val")

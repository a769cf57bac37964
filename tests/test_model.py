"""The model's quantizer settings: FSQ codebooks through the library's public API, and the no-quantizer bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from vector_quantize_pytorch import FSQ

import sign_vq
from conftest import EXAMPLES
from fixtures_model import SMALL, small_model
from sign_vq.config import Config, train_config, typed, validate
from sign_vq.dataset.archive import build_archive
from sign_vq.dataset.normalize import normalize_shard
from sign_vq.errors import UserError
from sign_vq.formats.posezip import PoseZip
from sign_vq.formats.statistics import merge_shards, write_stats
from sign_vq.model.checkpoint import build_model, load_model
from sign_vq.model.codes import reconstruct_array
from sign_vq.model.network import INPUT_LIMIT, PoseFSQAutoencoder
from sign_vq.model.parts import PART_GROUPS
from sign_vq.training.trainer import train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict[str, Path]:
    """Statistics and archive (all poses in the train split) of the bundled lexicon examples."""
    root = tmp_path_factory.mktemp("data")
    files = sorted((EXAMPLES / "lexicon").glob("*.pose"))
    normalize_shard(files, root / "shard.zip", root=EXAMPLES)
    write_stats(merge_shards([root / "shard.zip"]), root / "stats.json")
    build_archive([root / "shard.zip"], root / "archive.zip", val_fraction=0.0)
    return {"archive": root / "archive.zip", "stats": root / "stats.json"}


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("num_codebooks", [1, 2, 4])
def test_fsq_codebooks_quantize_each_codebook_alone_and_indices_map_back(num_codebooks, autocast):
    torch.manual_seed(num_codebooks)
    model = small_model(num_codebooks=num_codebooks)
    latent = torch.randn(3, 50, num_codebooks * 4) * 3
    single = FSQ([8, 5, 5, 5])  # one codebook: the reference for each slice of 4 dimensions
    expected = torch.stack([single.quantize(part) for part in latent.split(4, dim=-1)], dim=-2)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        codes, indices = model._quantize(latent.to(torch.bfloat16) if autocast else latent)
        back = model._from_codes(indices)
    if autocast:  # the bf16 input is what the quantizer sees
        expected = torch.stack([single.quantize(p.float()) for p in latent.bfloat16().split(4, dim=-1)], dim=-2)
    assert codes.dtype == torch.float32 and torch.equal(codes, expected.flatten(-2))
    assert indices.shape == (3, 50, num_codebooks) and 0 <= int(indices.min()) <= int(indices.max()) < 1000
    assert torch.equal(back, codes)


@pytest.mark.parametrize("num_codebooks", [2, 4])
def test_decode_of_encode_is_forward(num_codebooks):
    torch.manual_seed(0)
    model = small_model(num_codebooks=num_codebooks).eval()
    poses, observed = torch.randn(2, 10, 178, 3) * 0.3, torch.rand(2, 10, 178) > 0.2
    recon, codes = model(poses, observed)
    assert torch.equal(model.encode(poses, observed), codes) and codes.shape == (2, 10, num_codebooks)
    assert torch.allclose(model.decode(codes), recon, atol=1e-5)
    assert model.bits_per_frame == pytest.approx(num_codebooks * np.log2(1000))


def residual_model(**kwargs: object) -> PoseFSQAutoencoder:
    torch.manual_seed(0)
    return small_model(quantizer="residual", num_quantizers=4, **kwargs).eval()


def test_residual_first_k_codes_decode_on_their_own():
    model = residual_model()
    poses, observed = torch.randn(2, 10, 178, 3) * 0.3, torch.rand(2, 10, 178) > 0.2
    recon, codes = model(poses, observed)
    assert codes.shape == (2, 10, 4) and model.bits_per_frame == pytest.approx(4 * np.log2(1000))
    coarse = []
    for k in (1, 2, 3, 4):
        first = model.encode(poses, observed, quantizers=k)
        assert torch.equal(first, codes[..., :k])  # the first k codes are the full encoding's, cut
        recon_k, used = model(poses, observed, quantizers=k)
        assert torch.equal(used, first) and torch.allclose(model.decode(first), recon_k, atol=1e-5)
        coarse.append(recon_k)
    assert torch.allclose(coarse[-1], recon, atol=1e-5)
    assert not torch.allclose(coarse[0], recon, atol=1e-3)  # one code is not all four


def test_residual_refuses_more_quantizers_than_it_has_in_one_line():
    model = residual_model()
    poses, observed = torch.randn(1, 4, 178, 3), torch.ones(1, 4, 178, dtype=torch.bool)
    for k in (0, 5):
        with pytest.raises(UserError, match=f"--quantizers {k}: this model keeps 1 to 4") as error:
            model.encode(poses, observed, quantizers=k)
        assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="codes have 5 codes per frame; this model decodes 1 to 4"):
        model.decode(torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(UserError, match="--quantizers 2: .* fewer need a model.quantizer: residual model"):
        small_model(num_codebooks=4).encode(poses, observed, quantizers=2)
    message = str(refused({"train": {"model": {"quantizer": "residual", "num_codebooks": 2}}}))
    assert "train.model.num_codebooks = 2" in message and "must be 1 with train.model.quantizer: residual" in message
    message = str(refused({"train": {"model": {"quantizer": "residual", "num_quantizers": 1, "static_dims": 4}}}))
    assert "below num_quantizers x len(levels) = 4" in message


def refused(config: dict) -> UserError:
    with pytest.raises(UserError) as error:
        validate(config)
    return error.value


def quantized_under(model: PoseFSQAutoencoder, latent: torch.Tensor, autocast: bool) -> tuple:
    """The quantized latent, codes and decoded codes of ``latent`` (bf16 autocast or not; float32 asserted), and the
    (quantized, codes) float32 rounding gives for the same (bf16-rounded) latent."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        quantized, codes = model._quantize(latent.to(torch.bfloat16) if autocast else latent)
        back = model._from_codes(codes)
    assert quantized.dtype == torch.float32 and back.dtype == torch.float32
    return quantized, codes, back, model._quantize(latent.bfloat16().float() if autocast else latent)


@pytest.mark.parametrize("autocast", [False, True])
def test_residual_codes_stay_in_range_in_float32_under_bf16_autocast(autocast):
    quantized, codes, back, expected = quantized_under(residual_model(), torch.randn(3, 50, 16) * 3, autocast)
    assert codes.shape == (3, 50, 4) and 0 <= int(codes.min()) <= int(codes.max()) < 1000
    assert torch.allclose(back, quantized, atol=1e-6)
    assert torch.equal(quantized, expected[0])


def test_residual_quantizer_dropout_keeps_the_first_codes_of_a_training_batch():
    model = residual_model(quantize_dropout=1.0).train()
    kept = set()
    for seed in range(20):
        torch.manual_seed(seed)
        quantized, codes = model._quantize(torch.randn(2, 6, 16))
        j = int((codes[0, 0] >= 0).sum())
        assert (codes[..., :j] >= 0).all() and (codes[..., j:] == -1).all()
        assert torch.allclose(quantized, model._from_codes(codes[..., :j]), atol=1e-6)
        kept.add(j)
        model.zero_grad()
        quantized.sum().backward()  # a dropped quantizer gets a gradient of 0, not none: DDP needs every parameter
        assert all(p.grad is not None for p in model.quantizer.parameters())
    assert kept == {1, 2, 3, 4}
    with torch.no_grad():  # validation and inference use every quantizer
        assert (model._quantize(torch.randn(2, 6, 16))[1] >= 0).all()
    assert (model.eval()._quantize(torch.randn(2, 6, 16))[1] >= 0).all()


def parts_model(max_frames: int = 128, **model: object) -> PoseFSQAutoencoder:
    torch.manual_seed(0)
    config = train_config({"max_frames": max_frames, "model": {**SMALL, "quantizer": "parts", **model}})
    return PoseFSQAutoencoder(config.model, config.max_frames).eval()


def test_parts_have_one_code_each_in_its_own_range_and_their_bits_add_up():
    model = parts_model(part_levels={"hands": [8, 5], "face": [4, 3], "body": [3, 3, 3]})
    poses, observed = torch.randn(2, 10, 178, 3) * 0.3, torch.rand(2, 10, 178) > 0.2
    recon, codes = model(poses, observed)
    assert codes.shape == (2, 10, 3) and model.codes_per_frame == 3 and model.codebook_size == 40 + 12 + 27
    assert model.bits_per_frame == pytest.approx(np.log2(40) + np.log2(12) + np.log2(27))
    for part, (low, high) in enumerate([(0, 40), (40, 52), (52, 79)]):  # hands, face, body
        assert low <= int(codes[..., part].min()) and int(codes[..., part].max()) < high
    assert torch.equal(model.encode(poses, observed), codes)
    assert torch.allclose(model.decode(codes), recon, atol=1e-5)
    wrong = codes.clone()
    wrong[0, 0, 0] = 45  # a face code in the hands' place
    with pytest.raises(UserError, match="outside its part's range; .*hands 0..39, face 40..51, body 52..78"):
        model.decode(wrong)


def test_a_parts_model_codes_and_decodes_a_pose_in_padded_windows():
    model = parts_model(max_frames=16)  # the example has more frames: windows, the last one padded
    pose_file = sorted((EXAMPLES / "lexicon").glob("*.pose"))[0]
    codes = sign_vq.encode(model, pose_file)
    assert codes.shape[1] == 3 and len(codes) > 16 and model.quantizer.in_range(torch.as_tensor(codes))
    assert sign_vq.decode(model, codes, fps=25).body.data.shape[0] == len(codes)


def test_a_parts_code_sees_only_its_own_points():
    model = parts_model(static_dims=0)
    poses, observed = torch.randn(1, 10, 178, 3) * 0.3, torch.ones(1, 10, 178, dtype=torch.bool)
    padding = torch.zeros(1, 10, dtype=torch.bool)
    dims = np.cumsum([0] + model.quantizer.dims)  # the latent's slices: hands, face, body
    latent = model._motion_latent(model._standardized(poses, observed), observed.float(), padding)
    for part, (name, points) in enumerate(PART_GROUPS.items()):
        moved = poses.clone()
        moved[:, :, points] += 0.5
        other = model._motion_latent(model._standardized(moved, observed), observed.float(), padding)
        own = torch.zeros(latent.shape[-1], dtype=torch.bool)
        own[dims[part]:dims[part + 1]] = True
        assert not torch.allclose(other[..., own], latent[..., own]), name
        assert torch.equal(other[..., ~own], latent[..., ~own]), name


@pytest.mark.parametrize("autocast", [False, True])
def test_parts_quantize_in_float32_under_bf16_autocast(autocast):
    model = parts_model()
    quantized, codes, back, expected = quantized_under(model, torch.randn(3, 50, 5) * 3, autocast)
    assert torch.equal(back, quantized)
    assert torch.equal(quantized, expected[0]) and torch.equal(codes, expected[1])
    assert model.quantizer.in_range(codes) and len(codes.unique()) > 0.6 * model.codebook_size


def test_a_parts_model_rebuilds_from_its_config_and_refuses_what_it_cannot_hold():
    model = parts_model(part_levels={"hands": [8, 5], "face": [4], "body": [3, 3, 3]})
    saved = {"model": {**SMALL, "quantizer": "parts", "part_levels": {"hands": [8, 5], "face": [4], "body": [3, 3, 3]}}}
    rebuilt = build_model(Path("model.ckpt"), train_config(saved), model.state_dict())
    poses, observed = torch.randn(1, 6, 178, 3) * 0.3, torch.ones(1, 6, 178, dtype=torch.bool)
    assert torch.equal(rebuilt.encode(poses, observed), model.encode(poses, observed))
    message = str(refused({"train": {"model": {"quantizer": "parts", "num_codebooks": 2}}}))
    assert "must be 1 with train.model.quantizer: parts" in message
    message = str(refused({"train": {"model": {"quantizer": "parts", "static_dims": 3}}}))
    assert "train.model.static_dims = 3" in message and "below len(train.model.part_levels.body) = 3" in message
    assert "part_levels.face" in str(refused({"train": {"model": {"part_levels": {"face": [2]}}}}))


def test_a_far_outlier_reaches_the_encoder_only_as_far_as_the_input_limit():
    """A tracking glitch 1,000 standard deviations off codes like one at the limit: the rest of its window is spared."""
    torch.manual_seed(0)
    model = small_model(torch.zeros(178, 3), torch.full((178, 3), 0.1), quantizer="none").eval()
    poses, observed = torch.randn(1, 10, 178, 3) * 0.1, torch.ones(1, 10, 178, dtype=torch.bool)
    at_limit, glitch = poses.clone(), poses.clone()
    at_limit[0, 4, 170, :2] = INPUT_LIMIT * 0.1
    glitch[0, 4, 170, :2] = 1000 * 0.1
    within = poses.clone()
    within[0, 4, 170, :2] = INPUT_LIMIT * 0.1 * 0.9
    assert torch.equal(model(glitch, observed)[0], model(at_limit, observed)[0])
    assert not torch.equal(model(within, observed)[0], model(at_limit, observed)[0])  # below the limit it is seen


def test_without_quantizer_the_latents_stay_continuous_and_there_are_no_codes():
    torch.manual_seed(0)
    model = small_model(quantizer="none", num_codebooks=2).eval()
    latent = torch.randn(2, 5, 8)
    quantized, codes = model._quantize(latent)
    assert torch.equal(quantized, torch.tanh(latent)) and codes.shape == (2, 5, 0)
    recon, codes = model(torch.randn(2, 5, 178, 3), torch.ones(2, 5, 178, dtype=torch.bool))
    assert recon.shape == (2, 5, 178, 3) and codes.shape == (2, 5, 0)
    assert model.codebook_size == 0 and model.bits_per_frame == 32 * 8
    with pytest.raises(UserError, match="no quantizer"):
        model.encode(torch.zeros(1, 2, 178, 3), torch.ones(1, 2, 178, dtype=torch.bool))
    with pytest.raises(UserError, match="no quantizer"):
        model.decode(torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(UserError, match="train.model.quantizer"):
        small_model(quantizer="vq")
    with pytest.raises(UserError, match="quantizer"):
        validate({"train": {"model": {"quantizer": "vq"}}})


@pytest.mark.parametrize(("quantizer", "num_codebooks"),
                         [("fsq", 2), ("fsq", 4), ("residual", 1), ("parts", 1), ("none", 1)])
def test_variants_train_and_reconstruct(dataset, tmp_path, quantizer, num_codebooks):
    steps = 40
    config = typed(Config, validate({"train": {
        "max_steps": steps, "val_every": steps, "checkpoint_every": steps, "batch_size": 4, "max_frames": 24,
        "lr": 0.003, "warmup_steps": 5, "wandb": {"mode": "disabled"},
        "model": {**SMALL, "quantizer": quantizer, "num_codebooks": num_codebooks},
    }}))
    assert train(config, dataset["archive"], dataset["stats"], tmp_path / "model") == 0
    model = load_model(tmp_path / "model")
    assert model.num_codebooks == num_codebooks and (model.quantizer is None) == (quantizer == "none")
    zipped = PoseZip(dataset["archive"])
    pose = zipped.read(zipped.entries[0])
    mask = np.ma.getmaskarray(pose).any(-1)
    recon, codes = reconstruct_array(model, np.ma.filled(pose.astype(np.float32), 0.0), mask)
    assert recon.shape == pose.shape and np.isfinite(recon).all()
    per_frame = {"fsq": num_codebooks, "residual": 4, "parts": 3, "none": 0}[quantizer]  # residual: its default 4
    assert codes.shape == (len(pose), per_frame) and model.codes_per_frame == per_frame
    losses = (tmp_path / "model" / "metrics.csv").read_text().splitlines()
    assert len(losses) > 1

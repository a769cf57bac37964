"""Training: overfitting, resume after SIGKILL, signals, precision, bad inputs, W&B run ids."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fixtures_model import small_model
from sign_vq.cli import main
from sign_vq.config import load_config, train_config
from sign_vq.errors import UserError
from sign_vq.evaluation.metrics import codebook_stats
from sign_vq.model.checkpoint import load_model, read_checkpoint
from sign_vq.model.loss import part_weighted_mse
from sign_vq.model.network import PoseFSQAutoencoder
from sign_vq.training.data import PoseDataModule
from sign_vq.training.module import PoseVQModule
from sign_vq.training.trainer import INTERRUPTED
from sign_vq.training.trainer import train as train_in_process

TINY = {
    "max_steps": 30,
    "checkpoint_every": 10,
    "val_every": 15,
    "batch_size": 4,
    "max_frames": 32,
    "model": {"d_model": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.1},
    "wandb": {"mode": "disabled"},
}


def write_config(path: Path, **overrides) -> Path:
    train = json.loads(json.dumps(TINY))
    train.update(overrides)
    path.write_text(yaml.safe_dump({"train": train}))
    return path


def train_command(config: Path, dataset: dict, output: Path) -> list[str]:
    return [
        sys.executable, "-m", "sign_vq.cli", "train", "--config", str(config),
        "--archive", str(dataset["archive"]), "--stats", str(dataset["stats"]), "--output", str(output),
    ]


def run_train(
    config: Path, dataset: dict, output: Path, extra_env: dict | None = None, **kwargs
) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled"), **(extra_env or {})}
    return subprocess.run(train_command(config, dataset, output), capture_output=True, text=True, env=env, **kwargs)


def test_overfits_one_batch(dataset):
    config = train_config({"batch_size": 4, "max_frames": 32,
                           "model": {"d_model": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1}})
    data = PoseDataModule(dataset["archive"], config)
    batch = next(iter(data.train_dataloader()))
    torch.manual_seed(0)
    model = PoseFSQAutoencoder(config.model, config.max_frames)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    observed = batch["observed"] & ~batch["padding"][..., None]
    losses = []
    for _ in range(200):
        recon, _ = model(batch["poses"], observed, batch["padding"])
        loss = part_weighted_mse(recon, batch["poses"], observed)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] * 10 <= losses[0], (losses[0], losses[-1])


@pytest.mark.slow  # three training processes
def test_sigkill_then_rerun_equals_uninterrupted_run(dataset, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    reference = run_train(config, dataset, tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-2000:]

    output = tmp_path / "killed"
    killed = run_train(config, dataset, output, extra_env={"SIGN_VQ_STOP_AT_STEP": "15:kill"})
    assert killed.returncode == -signal.SIGKILL
    assert not (output / "model.ckpt").exists()
    assert read_checkpoint(output / "checkpoints" / "last.ckpt")["global_step"] == 10

    resumed = run_train(config, dataset, output)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    expected = read_checkpoint(tmp_path / "reference" / "model.ckpt")["state_dict"]
    actual = read_checkpoint(output / "model.ckpt")["state_dict"]
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_sigterm_during_validation_still_saves_the_checkpoint(dataset, tmp_path, monkeypatch):
    """Slurm's signal may land anywhere, e.g. mid-validation, where Lightning's own handler stops without saving."""
    validation_step = PoseVQModule.validation_step

    def signalled_validation_step(self, batch, batch_idx):
        os.kill(os.getpid(), signal.SIGTERM)
        return validation_step(self, batch, batch_idx)

    monkeypatch.setattr(PoseVQModule, "validation_step", signalled_validation_step)
    before = signal.getsignal(signal.SIGTERM)
    config = load_config(write_config(tmp_path / "config.yaml", max_steps=1000))
    output = tmp_path / "run"
    assert train_in_process(config, dataset["archive"], dataset["stats"], output) == INTERRUPTED
    last = read_checkpoint(output / "checkpoints" / "last.ckpt")
    assert last["global_step"] >= TINY["val_every"]
    assert not (output / "model.ckpt").exists()
    assert signal.getsignal(signal.SIGTERM) is before, "the training's signal handler outlived the run"


def test_bf16_mixed_trains_on_cpu(dataset, tmp_path):
    result = run_train(write_config(tmp_path / "c.yaml", max_steps=6, precision="bf16-mixed"), dataset, tmp_path / "m")
    assert result.returncode == 0, result.stderr[-2000:]
    model = load_model(tmp_path / "m")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fsq_under_bf16_autocast_uses_as_many_codes_as_fp32():
    torch.manual_seed(0)
    model = small_model()
    latent = torch.randn(8, 500, 4) * 3
    fp32 = model._quantize(latent)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model._quantize(latent.to(torch.bfloat16))[1]
    size = model.codebook_size
    assert int(bf16.max()) < size and int(bf16.min()) >= 0
    use32 = codebook_stats(torch.bincount(fp32.flatten(), minlength=size))["codebook_utilization"]
    use16 = codebook_stats(torch.bincount(bf16.flatten(), minlength=size))["codebook_utilization"]
    assert use32 > 0.5 and abs(use16 - use32) < 0.05


@pytest.mark.parametrize("static_dims", [0, 3])
def test_static_channel_decodes_like_forward_and_takes_poses_longer_than_max_frames(static_dims):
    torch.manual_seed(0)
    model = small_model(static_dims=static_dims, max_frames=8).eval()
    assert (model.static_dims > 0) == hasattr(model, "static_in")
    poses, observed = torch.randn(2, 12, 178, 3) * 0.3, torch.rand(2, 12, 178) > 0.2  # 12 frames > max_frames
    padding = torch.zeros(2, 12, dtype=torch.bool)
    padding[1, 9:] = True
    recon, codes = model(poses, observed, padding)
    assert recon.shape == poses.shape and torch.isfinite(recon).all()
    assert torch.allclose(model.decode(codes, padding), recon, atol=1e-5)
    static = model.quantizer.indices_to_codes(codes)[..., len(model.levels) - static_dims :]  # one codebook
    if static_dims:  # frames 0-7 send projections of the window's mean pose, frames beyond max_frames send zeros
        assert static[:, :8].abs().amax() > 0 and (static[:, 8:] == 0).all()
        moved = model.encode(poses + 0.5, observed, padding)  # another mean pose: other static codes
        assert not torch.equal(model.quantizer.indices_to_codes(moved)[:, :8, -static_dims:], static[:, :8])


def test_static_dims_must_leave_motion_dimensions():
    with pytest.raises(UserError, match="train.model.static_dims = 4"):
        small_model(static_dims=4)  # levels [8, 5, 5, 5]: 4 code dimensions


def test_one_codebook_trains_and_decodes(dataset, tmp_path):
    result = run_train(write_config(tmp_path / "c.yaml", max_steps=4), dataset, tmp_path / "m")
    assert result.returncode == 0, result.stderr[-2000:]
    model = load_model(tmp_path / "m" / "model.ckpt")
    assert model.num_codebooks == 1 and model.bits_per_frame == pytest.approx(np.log2(1000))
    poses, observed = torch.randn(1, 12, 178, 3) * 0.3, torch.ones(1, 12, 178, dtype=torch.bool)
    codes = model.encode(poses, observed)
    assert codes.shape == (1, 12, 1)
    recon, _ = model(poses, observed)
    assert torch.allclose(model.decode(codes), recon, atol=1e-5)


@pytest.mark.slow  # two training processes, each with its W&B service
def test_wandb_offline_run_id_is_kept_across_resume(dataset, tmp_path):
    output = tmp_path / "run"
    # a fresh W&B service per run, as in separate jobs (not one that an in-process test of this session started)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    config = write_config(tmp_path / "c.yaml", max_steps=4, checkpoint_every=2,
                          wandb={"mode": "offline", "project": "test"})
    first = subprocess.run(train_command(config, dataset, output), capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    run_id = (output / "wandb_run_id").read_text().strip()
    config = write_config(tmp_path / "c.yaml", max_steps=4, checkpoint_every=2,
                          wandb={"mode": "offline", "project": "test"})
    (output / "model.ckpt").unlink()
    second = subprocess.run(train_command(config, dataset, output), capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert (output / "wandb_run_id").read_text().strip() == run_id
    runs = list((output / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) >= 1


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: (d["archive"].with_name("trunc.zip").write_bytes(d["archive"].read_bytes()[:5000]),
                    {"archive": d["archive"].with_name("trunc.zip")})[1], "corrupt or truncated"),
        (lambda d: (d["root"].joinpath("bad_stats.json").write_text(json.dumps(
            {"count": [[1, 1, 1]] * 100, "sum": [[0, 0, 0]] * 100, "sumsq": [[0, 0, 0]] * 100})),
                    {"stats": d["root"] / "bad_stats.json"})[1], "statistics for 100 points"),
    ],
    ids=["truncated-archive", "stats-point-count"],
)
def test_bad_inputs_fail_clearly_and_keep_the_model(dataset, tmp_path, caplog, mutate, expected):
    output = tmp_path / "run"
    output.mkdir()
    (output / "model.ckpt").write_bytes(b"previous model")
    inputs = {**dataset, **mutate(dataset)}
    config = write_config(tmp_path / "c.yaml")
    code = main(["train", "--config", str(config), "--archive", str(inputs["archive"]),
                 "--stats", str(inputs["stats"]), "--output", str(output)])
    assert code == 2
    message = caplog.text
    assert expected in message
    assert str(inputs["archive"] if "archive" in expected or "truncated" in expected else inputs["stats"]) in message
    assert (output / "model.ckpt").read_bytes() == b"previous model"


@pytest.mark.parametrize(
    "train, expected",
    [({"max_stepz": 3}, "unknown config key train.max_stepz"), ({"lr": "fast"}, "train.lr = 'fast'")],
)
def test_bad_config_names_the_key(dataset, tmp_path, caplog, train, expected):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"train": train}))
    code = main(["train", "--config", str(config), "--archive", str(dataset["archive"]),
                 "--stats", str(dataset["stats"]), "--output", str(tmp_path / "run")])
    assert code == 2
    message = caplog.text
    assert expected in message and str(config) in message
    assert not (tmp_path / "run").exists()


def test_learning_rate_warms_up_linearly_then_decays_to_a_tenth_by_cosine():
    config = train_config({"lr": 0.01, "warmup_steps": 4, "max_steps": 14,
                           "model": {"d_model": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1}})
    module = PoseVQModule(config)
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(16):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    assert rates[4] == pytest.approx(0.01) and rates[9] == pytest.approx(0.01 * (0.1 + 0.9 * 0.5))
    assert rates[14] == pytest.approx(0.001) and rates[15] == pytest.approx(0.001), "stays at 10 % after max_steps"
    assert all(a >= b for a, b in zip(rates[4:], rates[5:])), "no increase after warm-up"


def test_a_batch_with_nothing_observed_gives_a_zero_loss_that_back_propagates():
    """e.g. a crop of a pose seen in 2 of 97 frames with batch_size 1: no crash, no update."""
    model = small_model()
    poses = torch.zeros(1, 8, 178, 3)
    observed = torch.zeros(1, 8, 178, dtype=torch.bool)
    recon, _ = model(poses, observed)
    loss = part_weighted_mse(recon, poses, observed)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())

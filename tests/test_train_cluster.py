"""Training as a cluster runs it: several processes (DDP on CPU, gloo), runs that resume or start over, one run per
folder, non-finite losses (stop signals: test_train_signals.py).

Processes stop themselves at a known step (``SIGN_VQ_STOP_AT_STEP``), so nothing here races a timer.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import resource
import signal
import socket
import subprocess

import lightning as L
import pytest
import torch

from conftest import EXAMPLES
from sign_vq.cli import main
from sign_vq.config import load_config
from sign_vq.dataset.normalize import normalize_shard
from sign_vq.evaluation.metrics import ReconstructionMetrics
from sign_vq.formats.statistics import load_stats, merge_shards, write_stats
from sign_vq.model.checkpoint import read_checkpoint
from sign_vq.training.data import PoseDataModule, RankShare, StepSampler
from sign_vq.training.module import PoseVQModule
from sign_vq.training.runs import LOCK_FILE, PREVIOUS, RUN_KEY, exclusive
from sign_vq.training.trainer import global_rank
from sign_vq.training.trainer import train as train_in_process
from test_hostile_models import payload_checkpoint
from test_train import run_train, train_command, write_config

FINGERPRINT = re.compile(r"rank (\d) stopped at step (\d+), weights (\w+)")


def fingerprints(log: str) -> dict[int, tuple[int, str]]:
    """rank -> (step, weights fingerprint) from a training log."""
    return {int(rank): (int(step), weights) for rank, step, weights in FINGERPRINT.findall(log)}


def csv_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --- samples and metrics per rank ----------------------------------------------------------------------------------


def test_step_sampler_gives_each_rank_other_samples_and_resumes_on_the_same_ones():
    step = 0
    ranks = [list(StepSampler(lambda: step, 5, 3, rank, 2)) for rank in range(2)]
    assert not set(ranks[0]) & set(ranks[1]), "ranks share samples"
    assert sorted(ranks[0] + ranks[1]) == list(range(5 * 3 * 2)), "a step's global batch is batch_size x world"
    step = 2
    resumed = list(StepSampler(lambda: step, 5, 3, 1, 2))
    assert resumed == ranks[1][2 * 3 :] and len(StepSampler(lambda: step, 5, 3, 1, 2)) == len(resumed)


@pytest.mark.parametrize("length, world", [(7, 2), (1, 3), (6, 3)])
def test_rank_shares_cover_every_window_once_with_equal_counts(length, world):
    shares = [list(RankShare(length, rank, world)) for rank in range(world)]
    assert len({len(share) for share in shares}) == 1, "every rank runs the same number of batches"
    real = sorted(i for share in shares for i in share if i >= 0)
    assert real == list(range(length))


def test_metric_sums_of_two_ranks_give_the_metrics_of_the_whole_split():
    torch.manual_seed(0)
    poses, recon = torch.randn(6, 10, 178, 3), torch.randn(6, 10, 178, 3)
    observed = torch.rand(6, 10, 178) > 0.3
    codes = torch.randint(0, 1000, (6, 10, 1))
    whole, halves = ReconstructionMetrics(1000, 10.0), [ReconstructionMetrics(1000, 10.0) for _ in range(2)]
    whole.update(recon, poses, observed, codes)
    for half, rows in zip(halves, (slice(0, 2), slice(2, 6))):
        half.update(recon[rows], poses[rows], observed[rows], codes[rows])
    other = iter([v for v in vars(halves[1]).values() if isinstance(v, torch.Tensor)])  # reduce's order
    halves[0].reduce(lambda value: value + next(other))
    expected, actual = whole.compute(), halves[0].compute()
    assert actual.keys() == expected.keys()
    for key in expected:
        assert actual[key] == pytest.approx(expected[key], rel=1e-12), key


# --- real multi-process training ------------------------------------------------------------------------------------


def ddp_config(tmp_path, **overrides):
    return write_config(
        tmp_path / "ddp.yaml", max_steps=40, checkpoint_every=10, val_every=20, devices=2, accelerator="cpu",
        **overrides,
    )


@pytest.mark.slow
def test_two_processes_train_alike_and_a_killed_run_rerun_ends_with_the_same_weights(dataset, tmp_path):
    config = ddp_config(tmp_path)
    reference = run_train(config, dataset, tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    ranks = fingerprints(reference.stderr)
    assert ranks.keys() == {0, 1} and ranks[0] == ranks[1], "every rank ends with the same weights at max_steps"
    assert ranks[0][0] == 40

    killed = run_train(config, dataset, tmp_path / "killed", extra_env={"SIGN_VQ_STOP_AT_STEP": "25:kill"})
    assert killed.returncode == -signal.SIGKILL
    assert read_checkpoint(tmp_path / "killed" / "checkpoints" / "last.ckpt")["global_step"] == 20
    resumed = run_train(config, dataset, tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    expected = read_checkpoint(tmp_path / "reference" / "model.ckpt")["state_dict"]
    actual = read_checkpoint(tmp_path / "killed" / "model.ckpt")["state_dict"]
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert fingerprints(resumed.stderr) == ranks

    # the validation at step 40 of the 2-process run = one process validating the final weights on the same split
    logged = next(row for row in csv_rows(tmp_path / "reference" / "metrics.csv")
                  if row["step"] == "39" and row.get("val/codebook_utilization"))
    train_config = load_config(config).train
    module = PoseVQModule(train_config)
    module.load_state_dict(expected)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    (single,) = trainer.validate(module, datamodule=PoseDataModule(dataset["archive"], train_config), verbose=False)
    for key in ("val/codebook_utilization", "val/perplexity", "val/error_body", "val/error_face",
                "val/error_left_hand", "val/error_right_hand"):
        assert float(logged[key]) == pytest.approx(float(single[key]), rel=1e-6), key


@pytest.mark.slow
def test_two_nodes_of_one_process_each_train_as_one_run(dataset, tmp_path):
    """`num_nodes: 2` started by hand on one machine (what a launcher does on two): node ranks 0 and 1 meet at
    MASTER_ADDR:MASTER_PORT and end with the same weights; only rank 0 writes the model."""
    config = write_config(tmp_path / "nodes.yaml", max_steps=20, checkpoint_every=10, val_every=10, num_nodes=2,
                          accelerator="cpu")
    output = tmp_path / "run"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "WANDB_MODE": "disabled", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    nodes = [
        subprocess.Popen(train_command(config, dataset, output), env={**env, "NODE_RANK": str(rank)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[1][-3000:]
    ranks = fingerprints(logs[0] + logs[1])
    assert ranks.keys() == {0, 1} and ranks[0] == ranks[1] and ranks[0][0] == 20
    assert "model written" in logs[0] and "model written" not in logs[1]


@pytest.mark.parametrize(
    "env, devices, expected",
    [({}, 2, 0), ({"RANK": "5"}, 2, 5), ({"NODE_RANK": "1", "LOCAL_RANK": "1"}, 4, 5), ({"NODE_RANK": "2"}, 4, 8),
     ({"SLURM_PROCID": "3"}, 4, 3), ({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}, 2, 1)],
)
def test_the_global_rank_is_known_before_lightning_starts(monkeypatch, env, devices, expected):
    for name in ("RANK", "NODE_RANK", "LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert global_rank(devices) == expected


# --- what a change means ----------------------------------------------------------------------------------------------


def test_more_steps_resume_and_a_model_change_starts_a_new_run_with_the_old_one_moved_aside(dataset, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    output = tmp_path / "run"
    args = (dataset["archive"], dataset["stats"], output)
    assert train_in_process(load_config(write_config(tmp_path / "a.yaml", max_steps=10)), *args) == 0
    caplog.clear()
    longer = load_config(write_config(tmp_path / "b.yaml", max_steps=20, num_workers=1, val_every=5))
    assert train_in_process(longer, *args) == 0
    assert "resuming from" in caplog.text
    assert read_checkpoint(output / "model.ckpt")["global_step"] == 20
    steps = {int(row["step"]) for row in csv_rows(output / "metrics.csv")}
    assert min(steps) < 10 <= max(steps), "the CSV keeps the first part of the run"

    caplog.clear()
    other = load_config(write_config(tmp_path / "c.yaml", max_steps=10, lr=0.002))
    assert train_in_process(other, *args) == 0
    assert "resuming from" not in caplog.text and "train.lr" in caplog.text
    (previous,) = (output / PREVIOUS).iterdir()
    assert read_checkpoint(previous / "checkpoints" / "last.ckpt")["global_step"] == 20
    assert (previous / "metrics.csv").exists() and (previous / "run.json").exists()
    assert max(int(row["step"]) for row in csv_rows(output / "metrics.csv")) < 10, "no rows of the old run"
    assert read_checkpoint(output / "model.ckpt")["hyper_parameters"]["config"]["lr"] == 0.002


def test_new_statistics_always_retrain_and_the_model_carries_them(dataset, tmp_path):
    output = tmp_path / "run"
    config = load_config(write_config(tmp_path / "a.yaml", max_steps=6))
    assert train_in_process(config, dataset["archive"], dataset["stats"], output) == 0
    subset = tmp_path / "subset.zip"
    normalize_shard(sorted(EXAMPLES.rglob("*.pose"))[::2], subset, root=EXAMPLES)
    write_stats(merge_shards([subset]), tmp_path / "stats.json")
    assert train_in_process(config, dataset["archive"], tmp_path / "stats.json", output) == 0
    assert (output / PREVIOUS).is_dir(), "the run on the old statistics was moved aside"
    mean = read_checkpoint(output / "model.ckpt")["state_dict"]["model.mean"].double()
    new, old = (torch.as_tensor(load_stats(path).mean).double() for path in (tmp_path / "stats.json", dataset["stats"]))
    assert torch.allclose(mean, new.reshape(mean.shape)) and not torch.allclose(mean, old.reshape(mean.shape))


def test_a_non_finite_loss_stops_with_the_step_and_the_causes_and_writes_no_checkpoint(
    dataset, tmp_path, caplog, monkeypatch
):
    def nan_loss(recon, *args):  # what a blown-up learning rate or bad statistics end in
        return recon.sum() * float("nan")

    monkeypatch.setattr("sign_vq.training.module.part_weighted_mse", nan_loss)
    config = write_config(tmp_path / "c.yaml", max_steps=20, checkpoint_every=1)
    output = tmp_path / "run"
    code = main(["train", "--config", str(config), "--archive", str(dataset["archive"]),
                 "--stats", str(dataset["stats"]), "--output", str(output)])
    assert code == 2
    assert "training diverged at step 1" in caplog.text and str(dataset["stats"]) in caplog.text
    assert "train.lr" in caplog.text
    assert not (output / "checkpoints" / "last.ckpt").exists() and not (output / "model.ckpt").exists()


def test_an_error_raised_in_a_dataloader_worker_reaches_the_user_as_its_own_line():
    from sign_vq.errors import UserError

    wrapped = UserError(  # what torch raises in the main process for a worker's UserError
        "Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\nsign_vq.errors.UserError: archive.zip: pose a/b: corrupt member (CRC); rebuild it'
    )
    assert str(wrapped) == "archive.zip: pose a/b: corrupt member (CRC); rebuild it"
    assert str(UserError("plain: message")) == "plain: message"


def test_a_last_checkpoint_carrying_code_is_refused_on_resume_and_never_runs(dataset, tmp_path, caplog):
    output = tmp_path / "run"
    config = load_config(write_config(tmp_path / "c.yaml", max_steps=10))
    assert train_in_process(config, dataset["archive"], dataset["stats"], output) == 0
    last, marker = output / "checkpoints" / "last.ckpt", tmp_path / "pwned"
    payload_checkpoint(last, last, marker, "os.system")
    longer = write_config(tmp_path / "d.yaml", max_steps=20)
    code = main(["train", "--config", str(longer), "--archive", str(dataset["archive"]),
                 "--stats", str(dataset["stats"]), "--output", str(output)])
    assert code == 2 and not marker.exists()
    assert f"{last}: refused to load" in caplog.text


def test_kept_checkpoints_hold_their_own_step_beside_the_one_rolling_last(dataset, tmp_path):
    output = tmp_path / "run"
    config = load_config(write_config(tmp_path / "c.yaml", max_steps=7, checkpoint_every=4, keep_every=3))
    assert train_in_process(config, dataset["archive"], dataset["stats"], output) == 0
    names = sorted(p.name for p in (output / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step-3.ckpt", "step-6.ckpt"]
    for step in (3, 6):
        assert read_checkpoint(output / "checkpoints" / f"step-{step}.ckpt")["global_step"] == step
    assert read_checkpoint(output / "checkpoints" / "last.ckpt")["global_step"] == 7


# --- one run per folder, and only its own checkpoints -----------------------------------------------------------------


def train_main(config, dataset, output) -> int:
    return main(["train", "--config", str(config), "--archive", str(dataset["archive"]),
                 "--stats", str(dataset["stats"]), "--output", str(output)])


def one_error(caplog) -> str:
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "\n" not in error
    return error


def test_a_second_run_into_a_held_folder_names_the_holder_and_leaves_the_folder_alone(dataset, tmp_path):
    output = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", max_steps=2)
    with exclusive(output):  # what a running `sign-vq train` holds
        second = run_train(config, dataset, output)
        assert second.returncode == 2, second.stderr[-2000:]
        (line,) = [line for line in second.stderr.splitlines() if "ERROR" in line]
        assert f"pid {os.getpid()} on {socket.gethostname()}" in line and str(output / LOCK_FILE) in line
        assert sorted(p.name for p in output.iterdir()) == [LOCK_FILE], "the second run wrote into the folder"
    assert run_train(config, dataset, output).returncode == 0, "the lock ends with its holder"


def _forged_step(checkpoint: dict, _other: dict) -> dict:
    checkpoint.pop(RUN_KEY, None)
    return {**checkpoint, "global_step": 10**9}


@pytest.mark.parametrize("foreign", [
    {"lr": 0.002},  # another run of the same model into the same folder (what two runs at once left behind)
    {"model": {"d_model": 16, "heads": 2, "encoder_layers": 1, "decoder_layers": 1}},  # another model
    _forged_step,  # a step far beyond max_steps, written by no run of this config
])
def test_a_last_checkpoint_this_run_did_not_write_is_never_resumed_nor_published(dataset, tmp_path, caplog, foreign):
    output = tmp_path / "run"
    assert train_main(write_config(tmp_path / "a.yaml", max_steps=2), dataset, output) == 0
    last, model = output / "checkpoints" / "last.ckpt", output / "model.ckpt"
    published = model.read_bytes()
    if callable(foreign):
        torch.save(foreign(torch.load(last, weights_only=True), {}), last)
    else:
        assert train_main(write_config(tmp_path / "b.yaml", max_steps=2, **foreign), dataset, tmp_path / "b") == 0
        (tmp_path / "b" / "checkpoints" / "last.ckpt").replace(last)
    caplog.clear()
    assert train_main(write_config(tmp_path / "a.yaml", max_steps=4), dataset, output) == 2
    error = one_error(caplog)
    assert str(last) in error and str(output / "run.json") in error and "delete it" in error
    assert model.read_bytes() == published


def test_a_plain_file_named_previous_is_one_line_and_stays(dataset, tmp_path, caplog):
    output = tmp_path / "run"
    output.mkdir()
    (output / "notes.txt").write_text("an older run's leftovers")
    (output / PREVIOUS).write_text("not a folder")
    assert train_main(write_config(tmp_path / "c.yaml", max_steps=2), dataset, output) == 2
    assert str(output / PREVIOUS) in one_error(caplog)
    assert (output / PREVIOUS).read_text() == "not a folder" and (output / "notes.txt").exists()


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_keeps_the_last_one(dataset, tmp_path):
    """The file size limit stands in for a full disk: writing the 1.9 MB checkpoint fails, the small files do not."""
    output = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", max_steps=20, checkpoint_every=2)
    limit = 1 << 20

    def small_files_only() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = run_train(config, dataset, output, preexec_fn=small_files_only)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "ERROR" in line]
    last = output / "checkpoints" / "last.ckpt"
    assert f"{last}: cannot write the checkpoint (File too large)" in line
    assert not last.exists() and os.listdir(last.parent) == [], "a temporary file was left beside it"

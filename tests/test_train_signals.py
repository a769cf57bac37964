"""Stop signals as a cluster sends them: to the whole process group (Slurm's warning, `scancel`, Ctrl-C), at every
moment of a run, DataLoader workers included; the main process saves one checkpoint and the rerun finishes.

Processes stop themselves at a known step (``SIGN_VQ_STOP_AT_STEP``), so nothing here races a timer.
"""

from __future__ import annotations

import re

import pytest

from sign_vq.model.checkpoint import read_checkpoint
from sign_vq.training.trainer import INTERRUPTED
from test_train import run_train, write_config
from test_train_cluster import one_error, train_main


@pytest.mark.slow
def test_a_stop_signal_to_the_process_group_saves_one_checkpoint_and_each_rerun_goes_on(dataset, tmp_path):
    """SIGTERM at step 12, then SIGUSR1 at step 20 of the rerun (both what Slurm sends before a time limit): each
    run saves one checkpoint and exits 3; the last rerun finishes."""
    config = write_config(tmp_path / "c.yaml", max_steps=30, checkpoint_every=100, num_workers=2, log_every=5)
    output = tmp_path / "run"
    for how, step, logged in (("term", 12, ["5", "10"]), ("usr1", 20, ["15", "20"])):
        stopped = run_train(config, dataset, output, extra_env={"SIGN_VQ_STOP_AT_STEP": f"{step}:{how}"},
                            start_new_session=True)
        assert stopped.returncode == INTERRUPTED, stopped.stderr[-3000:]
        assert "rerun the same command to resume" in stopped.stderr
        assert "killed by signal" not in stopped.stderr, "a DataLoader worker died of the signal"
        assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["last.ckpt"]
        assert read_checkpoint(output / "checkpoints" / "last.ckpt")["global_step"] == step + 1
        assert not (output / "model.ckpt").exists()
        # a batch log: plain lines every log_every steps, no progress-bar redraws, no third-party tips
        assert "\r" not in stopped.stderr and "Tip" not in stopped.stderr and "GPU available" not in stopped.stderr
        assert re.findall(r"step (\d+)/30 loss", stopped.stderr) == logged
    assert "resuming from" in stopped.stderr

    resumed = run_train(config, dataset, output)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    assert read_checkpoint(output / "model.ckpt")["global_step"] == 30


# (moment, step of the checkpoint saved). At a fork moment each DataLoader worker signals the group as soon as it is
# forked, which races the start of the workers forked before it: those runs start FORK_WORKERS workers per loader (the
# start windows of three runs of two). The other moments signal at the end of a step of the main process.
STOP_MOMENTS = [
    ("0:fork-term", 1),  # every training worker signals the group as soon as it is forked
    ("5:fork-term", 6),  # the validation workers do, at their first start
    ("3:term", 4),  # mid-epoch
    ("10:term", 11),  # right after a periodic checkpoint, before a validation epoch restarts its workers
    ("0:fork-int", 1),  # Ctrl-C while the workers start
    ("7:int", 8),  # Ctrl-C mid-epoch
]
FORK_WORKERS = 6


@pytest.mark.slow
@pytest.mark.parametrize(("moment", "saved_at"), STOP_MOMENTS)
def test_a_stop_signal_at_any_moment_never_kills_a_worker_and_the_main_process_saves(dataset, tmp_path, moment, saved_at):
    workers = FORK_WORKERS if "fork" in moment else 2
    config = write_config(tmp_path / "c.yaml", max_steps=14, checkpoint_every=10, val_every=5, num_workers=workers)
    output = tmp_path / "run"
    stopped = run_train(config, dataset, output, extra_env={"SIGN_VQ_STOP_AT_STEP": moment}, start_new_session=True)
    assert stopped.returncode == INTERRUPTED, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr and "killed by signal" not in stopped.stderr
    assert f"stop signal received: saved {output / 'checkpoints' / 'last.ckpt'} at step {saved_at}" in stopped.stderr
    assert read_checkpoint(output / "checkpoints" / "last.ckpt")["global_step"] == saved_at


def test_the_stop_at_step_hook_rejects_a_bad_value(dataset, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SIGN_VQ_STOP_AT_STEP", "soon")
    assert train_main(write_config(tmp_path / "c.yaml"), dataset, tmp_path / "run") == 2
    assert "SIGN_VQ_STOP_AT_STEP='soon'" in one_error(caplog)

"""Hostile and broken model files: loading never runs code; a bad checkpoint is one line naming the file (exit 2).
Also what a model cannot meaningfully score: weights that overflow, an archive with nothing observed."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures_model import EXAMPLES, REPO, make_checkpoint
from sign_vq.cli import main
from sign_vq.errors import UserError
from sign_vq.formats.statistics import PointStats
from sign_vq.formats.zipwriter import PoseZipWriter
from sign_vq.model.checkpoint import load_model, read_checkpoint

POSE = EXAMPLES / "lexicon" / "kinder.pose"
USER_ERROR = 2  # the exit status of every UserError (sign_vq.cli)


class Payload:
    """Pickles as a call of ``function(argument)``: what a malicious checkpoint carries."""

    def __init__(self, function, argument: str):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def payload_checkpoint(source: Path, target: Path, marker: Path, kind: str) -> Path:
    """``source`` re-saved with a payload that creates ``marker`` when the file is unpickled."""
    checkpoint = torch.load(source, weights_only=True)
    if kind == "os.system":
        checkpoint["hyper_parameters"]["note"] = Payload(os.system, f"touch '{marker}'")
    else:
        checkpoint["hyper_parameters"]["note"] = Payload(exec, f"open({str(marker)!r}, 'w').close()")
    torch.save(checkpoint, target)
    return target


def command(stage: str, model: Path, tmp_path: Path, trained) -> list[str]:
    """The command line of ``stage`` with ``model`` on a real input."""
    out = str(tmp_path / f"out-{stage}")
    if stage == "render":
        return ["render", "--model", str(model), "--archive", str(trained.archive), "--output", out, "--no-gif"]
    if stage == "decode":
        codes = tmp_path / "codes.npy"
        np.save(codes, np.zeros((5, 4), dtype=np.int64))
        return ["decode", "--model", str(model), "--fps", "25", "--output", out, str(codes)]
    return [stage, "--model", str(model), "--output", out, str(POSE)]


def one_error(caplog) -> str:
    """The single ERROR record the command logged, checked to be one line."""
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "\n" not in errors[0], errors[0]
    return errors[0]


def test_checkpoints_written_by_lightning_load_without_unpickling_code(trained):
    """Both files `sign-vq train` writes (with optimizer, loop and callback states) load with weights_only."""
    last = read_checkpoint(trained.model / "checkpoints" / "last.ckpt")
    assert {"optimizer_states", "loops", "callbacks", "lr_schedulers", "hyper_parameters"} <= set(last)
    final = read_checkpoint(trained.model / "model.ckpt")
    assert final["hyper_parameters"]["config"]["max_frames"] == 48
    assert load_model(trained.model).num_codebooks == 4


def test_every_torch_load_in_the_package_and_benchmarks_is_weights_only():
    call = r"\((?:[^()]|\([^()]*\))*\)"  # a call's arguments, with one level of nested parentheses
    problems = []
    for path in [*(REPO / "sign_vq").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")]:
        text = path.read_text()
        problems += [f"{path}: {c}" for c in re.findall(r"torch\.load" + call, text) if "weights_only=True" not in c]
        problems += [f"{path}: {c}" for c in re.findall(r"\bload\w*" + call, text) if "weights_only=False" in c]
    assert problems == []


@pytest.mark.parametrize("kind", ["os.system", "exec"])
@pytest.mark.parametrize("stage", ["reconstruct", "encode", "decode", "repair", "render"])
def test_checkpoint_with_a_code_payload_is_refused_and_never_runs(trained, tmp_path, caplog, stage, kind):
    marker = tmp_path / "pwned"
    model = payload_checkpoint(trained.model / "model.ckpt", tmp_path / "model.ckpt", marker, kind)
    with caplog.at_level(logging.ERROR):
        assert main(command(stage, model, tmp_path, trained)) == USER_ERROR
    message = one_error(caplog)
    assert str(model) in message and "refused to load" in message and "when unpickled" in message
    assert ("system" if kind == "os.system" else "exec") in message
    assert not marker.exists()
    assert not (tmp_path / f"out-{stage}").exists()


def test_payload_is_live_and_the_command_line_gives_one_line(trained, tmp_path):
    """The payload really runs when unpickled the unsafe way; `sign-vq` refuses it with exit 2 and one stderr line."""
    marker = tmp_path / "pwned"
    model = payload_checkpoint(trained.model / "model.ckpt", tmp_path / "model.ckpt", marker, "os.system")
    torch.load(model, weights_only=False)  # what the code did before: the payload runs
    assert marker.exists()
    marker.unlink()
    result = subprocess.run(
        [sys.executable, "-m", "sign_vq.cli", *command("reconstruct", model, tmp_path, trained)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == USER_ERROR, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "refused to load" in lines[0] and str(model) in lines[0], result.stderr[-2000:]
    assert not marker.exists()


def _truncated(good: dict, path: Path) -> None:
    torch.save(good, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _with_state(good: dict, update) -> dict:
    return {**good, "state_dict": {k: update(k, v) for k, v in good["state_dict"].items()}}


def _nan_weight(key: str, value: torch.Tensor) -> torch.Tensor:
    if key == "model.embed.weight":
        value = value.clone()
        value[0, 0] = float("nan")
    return value


# name -> (how the bad file is made from a good checkpoint dict, a fragment of the expected message)
BROKEN = {
    "truncated": (_truncated, "not a sign-vq checkpoint, unreadable"),
    "garbage": (lambda good, p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "not a sign-vq checkpoint"),
    "empty": (lambda good, p: p.write_bytes(b""), "not a sign-vq checkpoint, unreadable"),
    "text": (lambda good, p: p.write_text("model: big\n" * 20), "not a sign-vq checkpoint, unreadable"),
    "foreign dict": (lambda good, p: torch.save({"weights": torch.ones(3)}, p), "found ['weights']"),
    "plain list": (lambda good, p: torch.save([1, 2, 3], p), "found list"),
    "wrong shapes": (
        lambda good, p: torch.save(_with_state(good, lambda k, v: v[..., :1] if v.ndim == 2 else v), p),
        "does not match its model configuration",
    ),
    "foreign config": (
        lambda good, p: torch.save({**good, "hyper_parameters": {"config": {"model": {"d_model": "big"}}}}, p),
        "train.model.d_model",
    ),
    "state entry not a tensor": (
        lambda good, p: torch.save(_with_state(good, lambda k, v: [1.0] if k == "model.embed.bias" else v), p),
        "model.embed.bias is a list",
    ),
    "NaN weight": (lambda good, p: torch.save(_with_state(good, _nan_weight), p), "1 non-finite (NaN/inf) value(s)"),
    "inf buffer": (
        lambda good, p: torch.save(_with_state(good, lambda k, v: v * np.inf if k == "model.std" else v), p),
        "in weight model.std",
    ),
}


@pytest.mark.parametrize("name", BROKEN)
def test_broken_checkpoint_is_one_line_naming_the_file(tmp_path, caplog, name):
    good = torch.load(make_checkpoint(tmp_path / "good.ckpt", num_codebooks=4), weights_only=True)
    path = tmp_path / "bad.ckpt"
    make, fragment = BROKEN[name]
    make(good, path)
    with pytest.raises(UserError, match="bad.ckpt") as caught:
        load_model(path)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    for stage in ("reconstruct", "decode"):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert main(command(stage, path, tmp_path, None)) == USER_ERROR
        message = one_error(caplog)
        assert str(path) in message and fragment in message
        assert not (tmp_path / f"out-{stage}").exists()


@pytest.mark.parametrize("stage, fragment", [("reconstruct", "NaN/inf"), ("encode", "codes out of range")])
def test_weights_that_overflow_write_no_output(tmp_path, caplog, stage, fragment):
    """Finite weights so large that the model's output is NaN/inf: an error naming the input, nothing written."""
    path = make_checkpoint(tmp_path / "big.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"] = {k: v * 1e30 if "embed" in k else v for k, v in checkpoint["state_dict"].items()}
    torch.save(checkpoint, path)
    with caplog.at_level(logging.ERROR):
        assert main(command(stage, path, tmp_path, None)) == USER_ERROR
    message = one_error(caplog)
    assert str(POSE) in message and fragment in message and "its weights overflow" in message
    assert not any((tmp_path / f"out-{stage}").rglob("*.*"))


def test_render_of_poses_with_nothing_observed_says_so(tmp_path, caplog):
    """An archive whose poses have every keypoint masked: exit 2 with one line, not an error of 0.000."""
    shard, archive = tmp_path / "shard.zip", tmp_path / "archive.zip"
    with PoseZipWriter(shard) as writer:
        for name in ("a", "b"):
            info = {"fps": 25.0, "center": [0.0, 0.0, 0.0], "scale": 100.0, "width": 512, "height": 512}
            writer.add(name, np.zeros((6, 178, 3), np.float16), np.ones((6, 178), bool), info)
        writer.close(stats=PointStats.zeros().to_dict(), report={})
    assert main(["archive", "--val-fraction", "0", "--output", str(archive), str(shard)]) == 0
    model = make_checkpoint(tmp_path / "model.ckpt")
    with caplog.at_level(logging.ERROR):
        assert main(["render", "--model", str(model), "--archive", str(archive), "--output", str(tmp_path / "r"),
                     "--no-gif"]) == 2
    message = one_error(caplog)
    assert str(archive) in message and "nothing observed in the 2 train pose(s)" in message
    assert not (tmp_path / "r" / "metrics.json").exists() and not (tmp_path / "r" / "videos").exists()

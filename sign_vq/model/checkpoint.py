"""Reading models: checkpoints (``.ckpt``, never unpickling anything but tensors and plain values), training
folders, model folders and hub names; a model built from its saved config and placed on a device."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from sign_vq.config import TrainConfig, train_config
from sign_vq.errors import UserError
from sign_vq.model import hub
from sign_vq.model.network import STD_FLOOR, PoseFSQAutoencoder


def _unreadable(path: Path, error: Exception) -> UserError:
    """The one-line error for a file ``torch.load`` refused or could not parse."""
    refused = re.search(r"GLOBAL (\S+)", str(error))
    if refused:
        return UserError(
            f"{path}: refused to load: the file asks to run {refused.group(1)} when unpickled, and a sign-vq "
            "checkpoint holds only weights and plain values — use a model.ckpt from `sign-vq train` that you trust"
        )
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return UserError(
        f"{path}: not a sign-vq checkpoint, unreadable ({type(error).__name__}: {first[:160]}); "
        "expected a model.ckpt written by `sign-vq train` — copy it again or retrain"
    )


def _check_contents(path: Path, checkpoint: object) -> None:
    """A UserError unless ``checkpoint`` has a config and a state dict of finite tensors."""
    config = checkpoint.get("hyper_parameters", {}).get("config") if isinstance(checkpoint, dict) else None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(config, dict) or not isinstance(state, dict):
        found = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise UserError(
            f"{path}: not a sign-vq checkpoint: expected `hyper_parameters.config` and `state_dict`, found {found}; "
            "use a model.ckpt written by `sign-vq train`"
        )
    check_weights(path, state)


def check_weights(path: Path, state: dict) -> None:
    """A UserError naming ``path`` unless every entry of ``state`` is a tensor of finite values."""
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: not a sign-vq checkpoint: state_dict entry {name} is a {type(value).__name__}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise UserError(
                f"{path}: {bad} non-finite (NaN/inf) value(s) in weight {name}; the training diverged or the file "
                "is damaged — use an earlier checkpoint or retrain"
            )


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint's contents, loaded without running code (``weights_only``); a one-line UserError naming the file
    for a missing, truncated, garbage, foreign or code-carrying file, and for non-finite weights."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such model; train one with `sign-vq train` (it writes DIR/model.ckpt)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on a foreign pickle protocol: the error says it all
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError) as error:
        raise _unreadable(path, error) from None
    _check_contents(path, checkpoint)
    return checkpoint


def _mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """What differs between ``model``'s weights and ``state`` (empty when they fit), in one line."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if k in state
              and state[k].shape != v.shape]
    problems = [
        f"{len(items)} {what} (first: {items[0]})"
        for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong-shaped", shapes))
        if items
    ]
    return "; ".join(problems)


def build_model(path: Path, hyper: TrainConfig, state: dict[str, torch.Tensor]) -> PoseFSQAutoencoder:
    """The model of ``hyper`` with the weights ``state`` (read from ``path``, named in errors), in eval mode."""
    try:
        model = PoseFSQAutoencoder(hyper.model, hyper.max_frames)
    except (UserError, AssertionError, ValueError, RuntimeError) as error:
        raise UserError(f"{path}: its saved model configuration cannot build a model ({error})") from None
    problem = _mismatch(model, state)
    if problem:
        raise UserError(f"{path}: does not match its model configuration: {problem}")
    model.load_state_dict(state)
    model.std.clamp_(min=STD_FLOOR)  # as the constructor does with the statistics it is given
    model.train_config = hyper
    return model.eval()


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> PoseFSQAutoencoder:
    """Load a trained model: a `.ckpt` file, a training output folder (its `model.ckpt`), a model folder written by
    `sign-vq export` (read on the CPU), or a hub repository ``org/name`` (see :mod:`sign_vq.model.hub`)."""
    path = hub.resolve(path)
    if hub.is_model_folder(path):
        hyper, state = hub.read_folder(path)
        check_weights(path / hub.WEIGHTS, state)
        return build_model(path / hub.WEIGHTS, hyper, state)
    if path.is_dir():
        path = path / "model.ckpt"
    checkpoint = read_checkpoint(path, map_location)
    hyper = train_config(checkpoint["hyper_parameters"]["config"], f"{path} (its saved config)")
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    return build_model(path, hyper, state)


def load_on(model: Path, device: str = "cpu") -> PoseFSQAutoencoder:
    """:func:`load_model` onto ``device`` (e.g. ``cpu``, ``cuda``, ``cuda:1``), with a clear error if it is absent."""
    try:
        target = torch.device(device)
    except RuntimeError as error:
        raise UserError(f"--device {device}: {error}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return load_model(model, map_location=target).to(target)

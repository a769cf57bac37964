"""A model folder in the Hugging Face hub's layout, and models named by a hub repository (``org/name``).

A model folder (written by `sign-vq export`, see :mod:`sign_vq.stages.export`) holds::

    model.safetensors   the weights, tensors only (nothing runs when it is read)
    config.json         {"model_type": "sign-vq-fsq", "format_version": 1, "sign_vq_version": "...",
                         "train": <the checkpoint's train section>, "mean": 178 x 3, "std": 178 x 3}
    README.md           the model card

``config.json`` holds everything that rebuilds the model: the ``train`` section (checked like a config file: unknown
keys and wrong types are refused) and the dataset statistics the model standardizes its input with. A name that is no
local path but looks like ``org/name`` is fetched with ``huggingface_hub`` (the extra ``sign-vq[hub]``), or taken
from its cache (``HF_HUB_OFFLINE=1`` reads only the cache).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sign_vq.config import TrainConfig, train_config
from sign_vq.errors import UserError
from sign_vq.fileio import read_regular
from sign_vq.poses import skeleton

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
MODEL_TYPE = "sign-vq-fsq"
FORMAT_VERSION = 1
CONFIG_KEYS = {"model_type": str, "format_version": int, "sign_vq_version": str, "train": dict, "mean": list,
               "std": list}
SAFETENSORS_METADATA = {"format": "pt"}  # what torch's safetensors writer records; anything else is refused
MAX_CONFIG_BYTES = 1 << 20  # a config.json is ~20 KB (the statistics)
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding a ``config.json`` (a model folder, not a training folder)."""
    return path.is_dir() and (path / CONFIG).is_file()


def _bad_config(path: Path, problem: str) -> UserError:
    return UserError(f"{path}: {problem}; export the model again with `sign-vq export`")


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"key {twice[0]!r} given twice")
    return dict(pairs)


def _statistic(path: Path, key: str, value: list) -> np.ndarray:
    """The 178 x 3 table ``value`` of config key ``key`` as float32, or a UserError naming the file and key."""
    shape = (skeleton.NUM_POINTS, skeleton.DIMS)
    rows_ok = len(value) == shape[0] and all(isinstance(row, list) and len(row) == shape[1] for row in value)
    numbers_ok = rows_ok and all(type(v) in (int, float) and math.isfinite(v) for row in value for v in row)
    if not numbers_ok:
        raise _bad_config(path, f"key {key} must be {shape[0]} rows of {shape[1]} finite numbers")
    return np.array(value, dtype=np.float32)


def read_config(path: Path) -> tuple[TrainConfig, np.ndarray, np.ndarray]:
    """The train section, mean and std of a model folder's ``config.json``; a one-line UserError naming the file (and
    the key) for anything else: not JSON, unknown or missing keys, wrong types, values out of range."""
    try:
        raw = read_regular(path)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ValueError(f"{len(raw)} bytes, more than a model's config ({MAX_CONFIG_BYTES})")
        config = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _bad_config(path, f"not a sign-vq model config ({type(error).__name__}: {error})") from None
    if not isinstance(config, dict) or set(config) != set(CONFIG_KEYS):
        found = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise _bad_config(path, f"keys {found}; expected exactly {', '.join(CONFIG_KEYS)}")
    for key, kind in CONFIG_KEYS.items():
        if type(config[key]) is not kind:
            raise _bad_config(path, f"key {key} = {config[key]!r:.60}: expected {kind.__name__}")
    if (config["model_type"], config["format_version"]) != (MODEL_TYPE, FORMAT_VERSION):
        found = f"{config['model_type']!r:.40} version {config['format_version']}"
        raise _bad_config(path, f"a {found} model; this sign-vq reads {MODEL_TYPE!r} version {FORMAT_VERSION}")
    train = train_config(config["train"], f"{path} (key train)")
    return train, _statistic(path, "mean", config["mean"]), _statistic(path, "std", config["std"])


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors`` (on the CPU); a one-line UserError naming the file when it is not a
    safetensors file or carries anything but tensors (metadata other than ``{"format": "pt"}``)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():  # also a FIFO or device: never opened, so never blocking
        raise UserError(f"{path}: no such file; a model folder holds {WEIGHTS}, {CONFIG} and {CARD}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            weights = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        first = (str(error).strip().splitlines() or [""])[0][:160]
        raise UserError(f"{path}: not a safetensors file of weights ({type(error).__name__}: {first}); "
                        "export the model again with `sign-vq export`") from None
    if metadata != SAFETENSORS_METADATA:
        raise UserError(f"{path}: carries metadata {sorted(metadata)} beside its tensors; a sign-vq "
                        f"{WEIGHTS} holds tensors only — export the model again with `sign-vq export`")
    return weights


def read_folder(folder: Path) -> tuple[TrainConfig, dict[str, torch.Tensor]]:
    """A model folder's train section and its full state dict (the weights with the statistics as ``mean``/``std``)."""
    train, mean, std = read_config(folder / CONFIG)
    weights = read_weights(folder / WEIGHTS)
    return train, {**weights, "mean": torch.from_numpy(mean), "std": torch.from_numpy(std)}


def write_folder(folder: Path, config: dict, weights: dict[str, torch.Tensor], card: str) -> None:
    """Write a model folder's three files into the (new, empty) ``folder``: ``config`` must already hold every key of
    :data:`CONFIG_KEYS`; ``weights`` is the state dict without the statistics."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous().clone() for k, v in weights.items()}, str(folder / WEIGHTS),
              metadata=SAFETENSORS_METADATA)
    (folder / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
    (folder / CARD).write_text(card)


def resolve(name: str | Path) -> Path:
    """``name`` as a local path; a name that is no local path but a hub repository id (``org/name``): the folder of
    its snapshot, downloaded or from the hub cache with ``huggingface_hub``."""
    path = Path(name)
    if path.exists() or not REPO_ID.fullmatch(str(name)):
        return path
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:
        raise UserError(f"{name}: no such file or folder here; to fetch a model from the Hugging Face hub, "
                        "install its client: pip install 'sign-vq[hub]'") from None
    try:
        return Path(snapshot_download(str(name), allow_patterns=[CONFIG, WEIGHTS, CARD]))
    except (OSError, ValueError, EntryNotFoundError) as error:
        first = (str(error).strip().splitlines() or [""])[0][:160]
        raise UserError(f"{name}: no such file or folder here, and the Hugging Face hub gave no model by that name "
                        f"({type(error).__name__}: {first}); check the name, or unset HF_HUB_OFFLINE") from None

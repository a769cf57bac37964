"""sign-vq: discrete FSQ codes for sign-language poses (MediaPipe Holistic).

The Python API in three lines (imported on first use, so ``import sign_vq`` stays light)::

    model = sign_vq.load("results/model")        # a .ckpt, a training or model folder, or a hub org/name
    codes = sign_vq.encode(model, "my.pose")     # frames x codebooks; also a pose_format.Pose, an array, or a list
    poses = sign_vq.decode(model, codes, fps=25)  # a pose_format.Pose (or a list, for a list of codes)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["decode", "encode", "load"]

_API = {"load": ("sign_vq.model.checkpoint", "load_on"), "encode": ("sign_vq.api", "encode"),
        "decode": ("sign_vq.api", "decode")}


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'sign_vq' has no attribute {name!r}")
    module, attribute = _API[name]
    return getattr(importlib.import_module(module), attribute)

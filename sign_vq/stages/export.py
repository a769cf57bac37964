"""`sign-vq export --model M --output DIR`: a trained model as a folder in the Hugging Face hub's layout.

DIR gets ``model.safetensors``, ``config.json`` (see :mod:`sign_vq.model.hub`) and a ``README.md`` model card: the data,
the license, the bits per frame, the validation metrics the run reached (from the training folder's ``metrics.csv``,
when there is one), how to load the model, its intended use and limits. ``sign_vq.load(DIR)`` and ``--model DIR``
read it back and give exactly the codes of the checkpoint; upload DIR as it is to publish it (``hf upload org/name
DIR``).
"""

from __future__ import annotations

import argparse

from sign_vq.model.card import export


def run(args: argparse.Namespace) -> int:
    export(args.model, args.output, args.license, args.data)
    return 0


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("export")

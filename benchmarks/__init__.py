"""Benchmarks: one module per stage, each printing figures and ratios (`make bench`, `python -m benchmarks`).

They measure real poses: ``--data DIR`` (or ``SIGN_VQ_CORPUS``), by default the 472-file development corpus beside
the repository (``../shared/data/poses``); ``--data examples/poses`` runs them on the 23 bundled examples.
"""

from __future__ import annotations

import os
from pathlib import Path

CORPUS_ENV = "SIGN_VQ_CORPUS"
DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "poses"
DATA_HELP = f"folder of .pose files (default: ${CORPUS_ENV}, else {DEFAULT_CORPUS})"


def corpus(data: Path | None = None) -> Path:
    """The folder to measure on: ``data``, else ``$SIGN_VQ_CORPUS``, else the development corpus; without .pose files
    there, exit with one line saying where to get some."""
    root = Path(data or os.environ.get(CORPUS_ENV) or DEFAULT_CORPUS).resolve()
    if not root.is_dir() or next(root.rglob("*.pose"), None) is None:
        raise SystemExit(
            f"no .pose files under {root}: pass --data DIR (or set {CORPUS_ENV}) to a folder of MediaPipe Holistic "
            ".pose files, e.g. the fingerspelling lexicon of github.com/sign-language-processing/"
            "spoken-to-signed-translation, or --data examples/poses for the 23 bundled examples"
        )
    return root

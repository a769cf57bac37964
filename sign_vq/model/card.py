"""A trained model as a shareable folder: ``model.safetensors`` and ``config.json`` (see :mod:`.hub`) and a
``README.md`` model card with the data, the license, the bits per frame and the validation metrics the run reached."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

from sign_vq import __version__
from sign_vq.config import as_dict
from sign_vq.errors import UserError
from sign_vq.fileio import atomic_dir
from sign_vq.model import hub
from sign_vq.model.checkpoint import load_model
from sign_vq.model.network import PoseFSQAutoencoder

log = logging.getLogger(__name__)
LICENSE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")  # a hub license id: mit, cc-by-nc-sa-4.0, other ...
CARD_METRICS = {
    "val/loss": "loss (the training objective)",
    "val/mse": "mean squared error (normalized units)",
    "val/ratio_all": "error relative to the trivial reference (mean pose), all parts",
    "val/ratio_motion_all": "error relative to the trivial reference, motion only",
    "val/codebook_utilization": "share of the codes used",
    "val/perplexity": "code perplexity",
}


def validation_metrics(training: Path) -> tuple[int, dict[str, float]] | None:
    """(step, metrics) of the last validation in ``training/metrics.csv`` (the figures of :data:`CARD_METRICS`), or
    None when the folder recorded none."""
    try:
        with (training / "metrics.csv").open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("val/loss")]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not rows:
        return None
    try:
        return int(rows[-1]["step"]), {k: float(rows[-1][k]) for k in CARD_METRICS if rows[-1].get(k)}
    except (KeyError, ValueError):
        return None


def _metrics_section(metrics: tuple[int, dict[str, float]] | None) -> str:
    if metrics is None:
        return "Not recorded: the model was exported without its training folder's `metrics.csv`, or trained " \
               "without a validation split.\n"
    step, values = metrics
    lines = [f"On the validation split, at step {step}:\n", "| metric | value |", "| --- | --- |"]
    lines += [f"| {CARD_METRICS[k]} (`{k}`) | {v:.4g} |" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _data_section(training: Path, data: str | None) -> str:
    """What the model was trained on: the user's words, and the run's data fingerprints when known."""
    text = data or "Not described (pass `sign-vq export --data TEXT`)."
    try:
        run = json.loads((training / "run.json").read_text())
        text += f"\n\nTraining archive fingerprint `{run['archive']}`, statistics sha256 `{run['stats']}`."
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return text + " The dataset mean and standard deviation the model standardizes with are in `config.json`.\n"


def model_card(model: PoseFSQAutoencoder, license_id: str, data: str, metrics: str) -> str:
    """The README.md of a model folder (hub metadata first)."""
    train = model.train_config
    per_code = f"{model.codes_per_frame} code(s) of {model.codebook_size} values"
    return f"""---
license: {license_id}
library_name: sign-vq
tags: [sign-language, pose, tokenizer, fsq, mediapipe-holistic]
---

# sign-vq FSQ pose tokenizer

Compresses sign-language poses (MediaPipe Holistic, reduced to 178 points and shoulder-normalized) into discrete
codes and back: {per_code} per frame, **{model.bits_per_frame:.2f} bits per frame**
(FSQ levels {model.part_levels or list(model.levels)}, {model.static_dims} static dimension(s)).
Poses longer than {model.max_frames} frames are coded in equal windows. Model: transformer encoder and decoder,
d_model {train.model.d_model}, {train.model.encoder_layers} + {train.model.decoder_layers} layers, trained
{train.max_steps} steps.
Written by sign-vq {__version__}.

## Data

{data}
## Validation metrics

{metrics}
## How to load

```python
import sign_vq                                   # pip install 'sign-vq[hub]' to load from the hub
model = sign_vq.load("this/folder-or-org/name")
codes = sign_vq.encode(model, "my.pose")          # frames x {model.codes_per_frame}, 0 ... {model.codebook_size - 1}
pose = sign_vq.decode(model, codes, fps=25)       # a pose_format.Pose
```

From the shell: `sign-vq encode --model DIR --output codes.csv poses/` (or the original sign-vq's
`poses_to_codes --model DIR --data poses/ --output codes.csv`); `codes_to_poses --model DIR --codes "..." --output
x.pose`. The codes corpus has the columns `file,fps,length,codes` (codes space-separated, frame by frame).

## Intended use and limits

Intended for research on sign-language processing: discrete tokens for translation, transcription and generation
models, and compression of pose corpora. Decoded poses are normalized (shoulder centre and width), not in the
input's coordinates; the frame rate is not in the codes. Only the first person of a file is coded. Quality holds
for signers, cameras and languages like those of its training data; expect larger errors elsewhere (fast hand
shapes, faces, unseen builds). The codes carry a person's movements, and pose data can identify people: use it
under the license and consent terms of the data it came from.
"""


def _check_output(output: Path) -> None:
    """A UserError when ``output`` exists and is neither empty nor an earlier model folder (export replaces it)."""
    if output.exists() and not hub.is_model_folder(output) and (not output.is_dir() or any(output.iterdir())):
        raise UserError(f"--output {output}: exists and is not a sign-vq model folder; name a new folder")


def export(model_path: str | Path, output: Path, license_id: str = "other", data: str | None = None) -> Path:
    """Write the model ``model_path`` (a checkpoint, training folder, model folder or hub id) as a model folder."""
    if not LICENSE.fullmatch(license_id):
        raise UserError(f"--license {license_id!r}: expected a hub license id such as mit, cc-by-4.0 or other")
    _check_output(output)
    source = hub.resolve(model_path)
    model = load_model(source)
    training = source if source.is_dir() else source.parent
    config = {"model_type": hub.MODEL_TYPE, "format_version": hub.FORMAT_VERSION, "sign_vq_version": __version__,
              "train": as_dict(model.train_config), "mean": model.mean.tolist(), "std": model.std.tolist()}
    weights = {k: v for k, v in model.state_dict().items() if k not in ("mean", "std")}
    card = model_card(model, license_id, _data_section(training, data), _metrics_section(validation_metrics(training)))
    with atomic_dir(output) as folder:
        hub.write_folder(folder, config, weights, card)
    log.info("model folder written to %s (%.2f bits per frame)", output, model.bits_per_frame)
    return output

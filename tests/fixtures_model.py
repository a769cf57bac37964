"""Shared model fixtures for the inference and render tests (import the fixtures into a test module to use them).

``trained`` trains one small model on the bundled examples (all poses in the train split) once per test session,
whichever module asks first; ``make_checkpoint`` writes untrained checkpoints of any shape in milliseconds.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import EXAMPLES
from sign_vq.cli import main
from sign_vq.config import as_dict, train_config
from sign_vq.dataset.archive import build_archive
from sign_vq.dataset.normalize import normalize_shard
from sign_vq.formats.statistics import merge_shards, write_stats
from sign_vq.model.network import PoseFSQAutoencoder

REPO = Path(__file__).resolve().parents[1]
SMALL = {"d_model": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1}
MAX_FRAMES = 48  # shorter than the longest example (73 frames), so inference runs in several windows
# Small and fast on 2 CPU cores, with enough bits per frame (4 x 10) and steps to beat the trivial reference on every
# part of its training data (with the default relative per-part loss); body and face move little, so weigh more.
TRAIN_YAML = f"""\
train:
  max_steps: 400
  val_every: 400
  checkpoint_every: 400
  batch_size: 8
  max_frames: {MAX_FRAMES}
  lr: 0.003
  warmup_steps: 20
  model: {{d_model: 64, num_codebooks: 4}}
  loss: {{part_weights: {{body: 3, face: 10}}}}
  wandb: {{mode: disabled}}
"""


@dataclass
class Trained:
    model: Path  # training output folder (model.ckpt inside)
    archive: Path  # every example pose, split `train`
    shard: Path
    stats: Path
    files: list[Path]  # the example .pose files it was trained on
    seconds: float


def trained_in(folder: Path, seconds: float = 0.0) -> Trained:
    """Where `train_examples` writes into ``folder``."""
    files = sorted(EXAMPLES.rglob("*.pose"))
    return Trained(folder / "model", folder / "archive.zip", folder / "shard.zip", folder / "stats.json", files, seconds)


def train_examples(folder: Path) -> Trained:
    """normalize + stats + archive (no validation split) + train on the examples, into ``folder``."""
    paths = trained_in(folder)
    shard, stats, archive = map(str, (paths.shard, paths.stats, paths.archive))
    config = folder / "config.yaml"
    config.write_text(TRAIN_YAML)
    start = time.perf_counter()
    assert main(["normalize", "--output", shard, "--root", str(EXAMPLES), *map(str, paths.files)]) == 0
    assert main(["stats", "--output", stats, shard]) == 0
    assert main(["archive", "--val-fraction", "0", "--output", archive, shard]) == 0
    code = main(["train", "--config", str(config), "--archive", archive, "--stats", stats, "--output", str(paths.model)])
    assert code == 0
    return dataclasses.replace(paths, seconds=time.perf_counter() - start)


@pytest.fixture(scope="session")
def trained(request, tmp_path_factory) -> Trained:
    """The small model trained on the examples (once per session; registered by conftest's ``pytest_plugins``).

    Under pytest-xdist the workers share one: the first to ask trains it in the session's common temporary folder
    while the others wait on a lock, then read where it lies."""
    if not hasattr(request.config, "workerinput"):  # a plain pytest run
        return train_examples(tmp_path_factory.mktemp("trained"))
    folder = tmp_path_factory.getbasetemp().parent / "trained"  # the parent is the same for every worker
    done = folder / "trained.json"
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.is_file():
            folder.mkdir(exist_ok=True)
            result = train_examples(folder)
            done.write_text(json.dumps({"seconds": result.seconds}))
            return result
    return trained_in(folder, json.loads(done.read_text())["seconds"])


def small_model(mean: torch.Tensor | None = None, std: torch.Tensor | None = None, max_frames: int = 128,
                **model: object) -> PoseFSQAutoencoder:
    """A small untrained model (``model`` overrides the model section; no static channel unless asked)."""
    config = train_config({"max_frames": max_frames, "model": {**SMALL, "static_dims": 0, **model}})
    return PoseFSQAutoencoder(config.model, config.max_frames, mean, std)


def make_checkpoint(path: Path, seed: int = 0, max_frames: int = 16, **model: object) -> Path:
    """An untrained checkpoint in the layout `sign-vq train` writes (``model`` overrides the model section)."""
    config = train_config({"max_frames": max_frames, "model": {"d_model": 32, "heads": 2, **model}})
    torch.manual_seed(seed)
    net = PoseFSQAutoencoder(config.model, config.max_frames)
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": {"config": as_dict(config)}, "state_dict": state}, path)
    return path


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> dict[str, Path]:
    """Shard, statistics and archive of the bundled examples (20 % validation), for training tests."""
    root = tmp_path_factory.mktemp("data")
    files = sorted(EXAMPLES.rglob("*.pose"))
    normalize_shard(files, root / "shard.zip", root=EXAMPLES)
    write_stats(merge_shards([root / "shard.zip"]), root / "stats.json")
    build_archive([root / "shard.zip"], root / "archive.zip", val_fraction=0.2)
    return {"archive": root / "archive.zip", "stats": root / "stats.json", "root": root}

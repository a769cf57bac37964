"""`benchmarks.learning_curve`: one training run, scored at each requested step from that step's own checkpoint."""

import argparse
import json
import math

import pytest

from benchmarks.learning_curve import curve_config, main, step_list
from benchmarks.quality import TRAIN
from conftest import EXAMPLES

TINY = """\
train:
  batch_size: 2
  max_frames: 16
  lr: 0.01
  warmup_steps: 1
  val_every: 2
  model: {d_model: 16, heads: 2, encoder_layers: 1, decoder_layers: 1}
"""


def test_steps_are_sorted_distinct_and_positive():
    assert step_list("4000,1000,2000,1000") == [1000, 2000, 4000]
    with pytest.raises(argparse.ArgumentTypeError):
        step_list("0,2")


def test_one_run_to_the_last_step_keeps_a_checkpoint_at_each():
    overrides = {"max_steps": 5, "keep_every": 0, "model": {"d_model": 64}}
    config = curve_config(TRAIN, overrides, [1000, 2000, 6000]).train
    assert (config.max_steps, config.keep_every, config.checkpoint_every) == (6000, 1000, 1000)
    assert (config.model.d_model, config.model.num_codebooks, config.model.quantizer) == (64, 1, "fsq")


def test_each_step_is_scored_from_its_own_checkpoint_and_its_own_short_run(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    work, output = tmp_path / "work", tmp_path / "out"
    report = main(["--data", str(EXAMPLES), "--steps", "4,2", "--short-runs", "--threads", "1",
                   "--train", str(tmp_path / "tiny.yaml"), "--workdir", str(work), "--output", str(output)])
    first, second = report["checkpoints"]
    assert (first["steps"], second["steps"]) == (2, 4)
    kept = sorted(p.name for p in (work / "model-curve" / "checkpoints").glob("step-*.ckpt"))
    assert kept == ["step-2.ckpt", "step-4.ckpt"]
    assert 0 < first["train_minutes"] < second["train_minutes"]
    assert all(math.isfinite(r["ratio_all"]) for r in (first, second)) and first["ratio_all"] != second["ratio_all"]
    short = report["short_runs"]
    assert [r["steps"] for r in short] == [2, 4] and short[1] == second and (work / "model-steps-2" / "model.ckpt").exists()
    written = json.loads((output / "learning_curve.json").read_text())
    assert [(r["steps"], r["ratio_all"]) for r in written["checkpoints"]] == [(2, first["ratio_all"]),
                                                                              (4, second["ratio_all"])]
    assert (output / "learning-curve.png").read_bytes().startswith(b"\x89PNG")

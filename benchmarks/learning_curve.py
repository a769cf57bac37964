"""What compute buys (`make bench-curve`): the default model's error on unseen languages after 1k, 2k, 4k, 8k steps.

One run of `make bench-quality`'s default model (1 codebook, 10 bits per frame; ``--quick``: its small size) to
the largest step count, keeping a checkpoint at every requested step (``train.keep_every``); each checkpoint is
scored on the held-out languages by :func:`benchmarks.quality.evaluate`. The learning rate follows the schedule of
the whole run (cosine decay to the last step), so an earlier point is the long run on its way, not a shorter run's
end: ``--short-runs`` also trains a run ending at each smaller step count (twice the steps in all for 1k-8k).
Prints a table per curve (steps, training minutes, per-part ratios to the per-pose-mean reference, codes used) and
writes ``learning_curve.json`` and ``learning-curve.png`` to ``--output``.

    python -m benchmarks.learning_curve [--steps 1000,2000,4000,8000] [--short-runs] [--quick] [--threads N]
                                        [--output DIR] [--held-out gss,psr,tsm] [--data DIR] [--train T.yaml]
                                        [--workdir D]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from benchmarks import quality
from sign_vq.config import Config
from sign_vq.evaluation.names import metric_name
from sign_vq.fileio import png_figure
from sign_vq.training.trainer import train

if TYPE_CHECKING:
    from matplotlib.axes import Axes

STEPS = (1000, 2000, 4000, 8000)
VARIANT = "1"  # the default model: one FSQ codebook of levels [8,5,5,5]
OUTPUT = Path("results/learning-curve")


def step_list(text: str) -> list[int]:
    """``1000,2000`` as sorted distinct positive step counts."""
    steps = sorted({int(s) for s in text.split(",")})
    if steps[0] < 1:
        raise argparse.ArgumentTypeError(f"{text}: steps must be positive")
    return steps


def curve_config(base: dict, overrides: dict, steps: list[int]) -> Config:
    """The default variant's config, trained to the last of ``steps`` and keeping a checkpoint at each of them."""
    every = math.gcd(*steps)
    run = {"max_steps": steps[-1], "keep_every": every, "checkpoint_every": every}
    return quality.variant_config(base, {**overrides, **run}, quality.VARIANTS[VARIANT])


def checkpoint(model_dir: Path, step: int) -> Path:
    """The checkpoint kept at ``step`` (``train.keep_every``)."""
    return model_dir / "checkpoints" / f"step-{step}.ckpt"


def learning_curve(config: Config, files: dict, steps: list[int], model_dir: Path) -> list[dict]:
    """Train once into ``model_dir`` and score the checkpoint of each of ``steps`` on the test archive, with the
    minutes of training (validation included) it took to reach it."""
    start = time.time()
    if train(config, files["train"], files["stats"], model_dir) != 0:
        raise SystemExit("learning curve: training stopped early")
    rows = []
    for step in steps:
        path = checkpoint(model_dir, step)
        rows.append({"steps": step, "train_minutes": (path.stat().st_mtime - start) / 60,
                     **quality.evaluate(path, files["test"])})
    return rows


def short_runs(base: dict, overrides: dict, files: dict, steps: list[int], work: Path) -> list[dict]:
    """A run ending at each of ``steps`` (its own learning-rate decay), scored at its end."""
    return [learning_curve(curve_config(base, overrides, [step]), files, [step], work / f"model-steps-{step}")[0]
            for step in steps]


def print_table(title: str, rows: list[dict]) -> None:
    """Markdown table: per-part error / reference at each step count."""
    parts = quality.PARTS
    print(f"\n{title}: per-part error / per-pose-mean reference (unseen languages)\n")
    print(quality.table_row("steps", ["train min"] + [quality.TITLES[p] for p in parts] + ["codes used"]))
    print(quality.table_row("---", ["---"] * (len(parts) + 2)))
    for r in rows:
        ratios = [f"{r[metric_name('ratio', p)]:.2f}" for p in parts]
        print(quality.table_row(f"{r['steps']:,}", [f"{r['train_minutes']:.1f}", *ratios,
                                                    f"{r['codebook_utilization']:.1%}"]))


def plot_panel(axes: Axes, rows: list[dict], title: str) -> None:
    """Per-part and overall ratio over training steps (log scale), the per-pose-mean reference at 1."""
    steps = [r["steps"] for r in rows]
    for part in quality.PARTS:
        overall = part == "all"
        axes.plot(steps, [r[metric_name("ratio", part)] for r in rows], marker="o", label=quality.TITLES[part],
                  color="black" if overall else None, linewidth=2.5 if overall else 1.5)
    axes.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="still pose (its mean)")
    axes.set_xscale("log", base=2)
    axes.set_xticks(steps, [f"{s:,}" for s in steps])
    axes.minorticks_off()
    axes.set(xlabel="training steps", ylabel="error / per-pose-mean reference", title=title)


def plot(curves: dict[str, list[dict]], title: str, path: Path) -> None:
    """One panel per curve (titled by its key), sharing the y axis, under ``title``."""
    with png_figure(path, figsize=(6.5 * len(curves), 4), ncols=len(curves)) as (figure, axes):
        panels = list(np.atleast_1d(axes))
        for panel, (name, rows) in zip(panels, curves.items()):
            plot_panel(panel, rows, name)
            panel.sharey(panels[0])
        panels[0].legend(fontsize=8, ncols=2)
        figure.suptitle(title)


def size(config: Config) -> str:
    """The network and batch in words: ``d_model 64, 2+2 layers, batch 8``."""
    model, batch = config.train.model, config.train.batch_size
    return f"d_model {model.d_model}, {model.encoder_layers}+{model.decoder_layers} layers, batch {batch}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    quality.add_arguments(parser)
    parser.add_argument("--steps", type=step_list, default=list(STEPS), help="step counts to score, comma-separated")
    parser.add_argument("--short-runs", action="store_true", help="also a run ending at each smaller step count")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"folder for the JSON and PNG (default {OUTPUT})")
    args = parser.parse_args(argv)
    base, overrides, files, work = quality.set_up(args)
    config = curve_config(base, overrides, args.steps)
    start = time.perf_counter()
    curves = {"checkpoints": learning_curve(config, files, args.steps, work / "model-curve")}
    if args.short_runs:
        ends = short_runs(base, overrides, files, args.steps[:-1], work)
        curves["short_runs"] = ends + curves["checkpoints"][-1:]
    minutes = (time.perf_counter() - start) / 60

    print(f"\nlearning curve: {size(config)} on {quality.describe(files)}; {minutes:.1f} min of training and scoring")
    titles = {"checkpoints": f"one run of {args.steps[-1]:,} steps, at its checkpoints",
              "short_runs": "a run ending at each step count"}
    for name, rows in curves.items():
        print_table(titles[name], rows)
    args.output.mkdir(parents=True, exist_ok=True)
    plot({titles[name]: rows for name, rows in curves.items()}, f"1 codebook (10 bits/frame), {size(config)}",
         args.output / "learning-curve.png")
    report = {"quick": args.quick, "threads": torch.get_num_threads(), "languages_test": files["held_out"],
              "size": size(config), "minutes": minutes, "overrides": overrides,
              **{name: [{k: v for k, v in r.items() if k != "poses"} for r in rows] for name, rows in curves.items()}}
    (args.output / "learning_curve.json").write_text(json.dumps(report, indent=1))
    print(f"details: {args.output / 'learning_curve.json'}, plot: {args.output / 'learning-curve.png'}")
    return report


if __name__ == "__main__":
    main()

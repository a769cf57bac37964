"""Quality benchmark (`make bench-quality`): train on 12 fingerspelling languages, reconstruct 3 unseen ones.

Prints per-part error (shoulder widths, original coordinates / shoulder width) against the trivial reference
(every frame = the pose's own mean), codebook utilization, bits per frame and the training wall time.
Target: every part <= 0.5x the reference at <= 10 bits per frame after <= 10 minutes on 2 CPU cores,
with >= 90 % of the codebook used.

    python -m benchmarks.quality [--steps N] [--held-out gss,psr,tsm] [--data DIR] [--train T.yaml]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

from benchmarks import DATA_HELP, corpus
from sign_vq import skeleton
from sign_vq.archive import build_archive
from sign_vq.config import validate
from sign_vq.evaluation import measure
from sign_vq.model import load_model
from sign_vq.normalize import normalize_shard
from sign_vq.posezip import PoseZip
from sign_vq.stats import merge_shards, write_stats
from sign_vq.train import train

HELD_OUT = ("gss", "psr", "tsm")  # three unseen languages (one includes the far-away-hand recordings)
TRAIN = {
    "max_steps": 4000,
    "batch_size": 16,
    "max_frames": 64,
    "lr": 0.002,
    "warmup_steps": 100,
    "checkpoint_every": 1000,
    "val_every": 500,
    "weight_decay": 0.01,
    "model": {"d_model": 128, "heads": 4, "encoder_layers": 3, "decoder_layers": 3, "dropout": 0.1,
              "levels": [8, 5, 5, 5]},
    "wandb": {"mode": "disabled"},
}


def evaluate(model_dir: Path, archive: Path) -> dict:
    """Metrics of the model over every whole pose of ``archive`` (reference: each pose's own mean)."""
    zipped = PoseZip(archive)
    return measure(load_model(model_dir), zipped, zipped.entries)


def prepare(data: Path, held_out: set[str], work: Path) -> dict:
    """Normalize the fingerspelling files into ``work``: stats and archive of the training languages, test archive
    of the ``held_out`` ones. Returns the paths (``train``, ``test``, ``stats``) and the pose counts."""
    root = data / "fingerspelling"
    languages = sorted(p.name for p in root.iterdir() if p.is_dir())
    work.mkdir(parents=True, exist_ok=True)
    seen = [f for lang in languages if lang not in held_out for f in sorted((root / lang).glob("*.pose"))]
    unseen = [f for lang in languages if lang in held_out for f in sorted((root / lang).glob("*.pose"))]
    normalize_shard(seen, work / "seen.zip", root=root)
    normalize_shard(unseen, work / "unseen.zip", root=root)
    write_stats(merge_shards([work / "seen.zip"]), work / "stats.json")
    build_archive([work / "seen.zip"], work / "train.zip", val_fraction=0.05)
    build_archive([work / "unseen.zip"], work / "test.zip", val_fraction=1.0)
    return {"train": work / "train.zip", "test": work / "test.zip", "stats": work / "stats.json",
            "languages_train": len(languages) - len(held_out), "poses_train": len(seen), "poses_test": len(unseen)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    parser.add_argument("--held-out", default=",".join(HELD_OUT))
    parser.add_argument("--steps", type=int, default=TRAIN["max_steps"])
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary folder)")
    parser.add_argument("--train", type=Path, help="YAML file with `train` keys that override the benchmark's")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("WANDB_MODE", "disabled")
    held_out = set(args.held_out.split(","))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sign-vq-quality-"))
    files = prepare(corpus(args.data), held_out, work)

    overrides = yaml.safe_load(args.train.read_text())["train"] if args.train else {}
    config = validate({"train": {**TRAIN, "max_steps": args.steps, **overrides}})
    start = time.perf_counter()
    status = train(config, files["train"], files["stats"], work / "model")
    minutes = (time.perf_counter() - start) / 60
    if status != 0:
        raise SystemExit(f"training stopped early (status {status})")
    result = evaluate(work / "model", files["test"])
    result.update(train_minutes=minutes, steps=args.steps, threads=torch.get_num_threads(),
                  languages_test=sorted(held_out), **{k: v for k, v in files.items() if not isinstance(v, Path)})

    print(f"\nquality: trained {args.steps} steps in {minutes:.1f} min on {torch.get_num_threads()} threads; "
          f"test = {', '.join(sorted(held_out))} ({files['poses_test']} poses, never seen)")
    print(f"{'part':<12}{'model':>10}{'reference':>12}{'ratio':>8}  (mean L2 error, shoulder widths)")
    for name in skeleton.PARTS:
        print(f"{name:<12}{result[f'error_{name}']:>10.4f}{result[f'reference_{name}']:>12.4f}"
              f"{result[f'ratio_{name}']:>8.2f}")
    print(f"bits/frame {result['bits_per_frame']:.2f}  compression {result['compression_ratio']:.0f}x  "
          f"codebook used {result['codebook_utilization']:.1%}  perplexity {result['perplexity']:.0f}")
    ok = all(result[f"ratio_{n}"] <= 0.5 for n in skeleton.PARTS) and result["bits_per_frame"] <= 10
    ok = ok and minutes <= 10 and result["codebook_utilization"] >= 0.9
    print(f"target (every ratio <= 0.5, <= 10 bits, <= 10 min, >= 90 % codes): {'MET' if ok else 'NOT MET'}")
    (work / "quality.json").write_text(json.dumps(result, indent=1))
    print(f"details: {work / 'quality.json'}")
    return result


if __name__ == "__main__":
    main()

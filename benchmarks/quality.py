"""Rate-distortion benchmark (`make bench-quality`): train on 12 fingerspelling languages, reconstruct 3 unseen ones.

The same network at 1, 2 and 4 FSQ codebooks per frame (10, 20, 40 bits with levels [8,5,5,5]), without a quantizer
(its upper bound: the gap is what quantization costs), and one residual model of 4 quantizers decoded from its first k
= 1, 2, 3, 4 codes per frame (10 to 40 bits from one model), and one FSQ codebook per part (hands, face, body;
`parts10`, `parts40`) at the bits of 1 and 4 codebooks, each trained for the same steps at the same size. Every error
is a ratio to the trivial reference (each pose's own mean; < 1 beats a still pose), over every whole test pose, from
:class:`sign_vq.evaluation.metrics.ReconstructionMetrics`: per part, overall, the field's metrics (motion error, handshape error,
nDTW mean joint error, pose-evaluation's DTWp and nDTWp, jitter and acceleration error) and per body point; then per
held-out language, and the pose that weighs most in each part (its share of the part's error, the part's ratio without
it: one glitched recording can carry half of it). Targets (issues 15 and 24) are checked at the end.

    python -m benchmarks.quality [--quick] [--steps N] [--threads N] [--variants 1,2,4,none,residual,parts10,parts40]
                                 [--held-out gss,psr,tsm] [--data DIR] [--train T.yaml] [--workdir D]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

from benchmarks import DATA_HELP, corpus
from sign_vq.config import Config, typed, validate
from sign_vq.dataset.archive import build_archive
from sign_vq.dataset.normalize import normalize_shard
from sign_vq.evaluation.metrics import ReconstructionMetrics
from sign_vq.evaluation.names import HANDS, SCOPES, metric_name
from sign_vq.evaluation.reconstruction import add_pose, evaluating, new_metrics, reconstructions
from sign_vq.formats.posezip import PoseZip
from sign_vq.formats.statistics import merge_shards, write_stats
from sign_vq.model.checkpoint import load_model
from sign_vq.model.network import PoseFSQAutoencoder
from sign_vq.model.parts import PartQuantizer
from sign_vq.poses import skeleton
from sign_vq.training.trainer import train

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
# --quick: a smaller network, batch and run (about 10x less compute than the full run), the same for every variant
QUICK = {"max_steps": 600, "batch_size": 8, "val_every": 600, "checkpoint_every": 600,
         "model": {**TRAIN["model"], "d_model": 64, "encoder_layers": 2, "decoder_layers": 2}}
VARIANTS = {"1": {"num_codebooks": 1}, "2": {"num_codebooks": 2}, "4": {"num_codebooks": 4},
            "none": {"num_codebooks": 1, "quantizer": "none"},
            "residual": {"num_codebooks": 1, "quantizer": "residual", "num_quantizers": 4},
            # one codebook per part (hands, face, body) at the bits of 1 and of 4 codebooks: 9.9 and 39.6 (10.0, 39.9)
            "parts10": {"num_codebooks": 1, "quantizer": "parts"},
            "parts40": {"num_codebooks": 1, "quantizer": "parts",
                        "part_levels": {"hands": [8, 8, 8, 8, 8, 5, 5], "face": [8, 5, 5, 5], "body": [8, 5, 5, 5]}}}
# the shared latent and the per-part quantizer at about the same bits: their targets are checked alike
TEN_BITS, FORTY_BITS = ("1", "parts10"), ("4", "parts40")
PARTS = tuple(SCOPES)  # the parts and "all"
TITLES = {"body": "body", "face": "face", "left_hand": "left hand", "right_hand": "right hand", "all": "overall"}


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


def evaluate(model_dir: Path, archive: Path, quantizers: int | None = None) -> dict:
    """Metrics of the model (from a residual model's first ``quantizers`` codes when given) over every whole pose of
    ``archive`` (with DTW), the body's per-point ratios, the ratios per language (the folder in a pose's id), and
    each pose's error and reference sums per part."""
    model = load_model(model_dir)
    zipped = PoseZip(archive)
    bits = model.bits_per_frame if quantizers is None else model.bits_per_frame * model.kept(quantizers) / model.codes_per_frame
    metrics = ReconstructionMetrics(model.codebook_size, bits, dtw=True)
    poses = []
    with evaluating(model):
        for pose in reconstructions(model, zipped, zipped.entries, quantizers):
            add_pose(metrics, pose)
            alone = new_metrics(model)
            add_pose(alone, pose)
            poses.append({"id": pose.entry["id"], "frames": len(pose.data), "error": alone.part_sums(),
                          "reference": alone.part_sums("reference")})
    languages: dict[str, list[dict]] = {}
    for pose in poses:
        languages.setdefault(pose["id"].split("/")[0], []).append(pose)
    return {**metrics.compute(), "body_points": metrics.point_ratios()[skeleton.PARTS["body"]].tolist(),
            "part_codes": part_codes(model, metrics.codes),
            "languages": {name: {p: part_ratio(group, p) for p in PARTS} for name, group in sorted(languages.items())},
            "poses": poses}


def part_codes(model: PoseFSQAutoencoder, histogram: torch.Tensor) -> dict[str, list[float]]:
    """A parts model's codebooks: part -> [fraction of its codes used, its codebook size] ({} for other models)."""
    if not isinstance(model.quantizer, PartQuantizer):
        return {}
    ranges = zip(model.part_levels, model.quantizer.offsets, model.quantizer.sizes)
    return {name: [float((histogram[start:start + size] > 0).double().mean()), size] for name, start, size in ranges}


def _sums(poses: list[dict], part: str) -> tuple[float, float]:
    return sum(p["error"][part] for p in poses), sum(p["reference"][part] for p in poses)


def part_ratio(poses: list[dict], part: str) -> float:
    """``part``'s error over its reference, summed over ``poses`` (NaN where the part was never seen)."""
    error, reference = _sums(poses, part)
    return error / reference if reference > 0 else math.nan


def heaviest(poses: list[dict], part: str) -> tuple[dict, float, float]:
    """The pose with the largest share of ``part``'s error sum, that share, and the part's ratio without the pose."""
    error, _ = _sums(poses, part)
    top = max(poses, key=lambda p: p["error"][part])
    share = top["error"][part] / error if error > 0 else math.nan
    return top, share, part_ratio([p for p in poses if p is not top], part)


def variant_config(base: dict, overrides: dict, variant: dict) -> Config:
    """The validated config of one variant: ``base``, the user's overrides, then the variant's model keys."""
    model = {**base["model"], **overrides.get("model", {}), **variant}
    return typed(Config, validate({"train": {**base, **overrides, "model": model}}))


def run_variant(name: str, config: Config, files: dict, work: Path) -> dict[str, dict]:
    """Train variant ``name`` and evaluate it: one result, or one per k first codes of the residual model
    (``residual@k``)."""
    start = time.perf_counter()
    if train(config, files["train"], files["stats"], work / f"model-{name}") != 0:
        raise SystemExit(f"variant {name}: training stopped early")
    minutes = (time.perf_counter() - start) / 60
    model = config.train.model
    decoded = {name: None}
    if model.quantizer == "residual":
        decoded = {f"{name}@{k}": k for k in range(1, model.num_quantizers + 1)}
    return {row: {**evaluate(work / f"model-{name}", files["test"], k), "train_minutes": minutes}
            for row, k in decoded.items()}


def label(name: str) -> str:
    """A variant's row label: ``1 codebook``, ``no quantizer``, ``residual, first 2``."""
    if name == "none":
        return "no quantizer"
    if "@" in name:
        return f"residual, first {name.split('@')[1]}"
    if name.startswith("parts"):
        return f"per part, {name.removeprefix('parts')} bits"
    return f"{name} codebook{'s' * (name != '1')}"


def table_row(label: str, values: list[str]) -> str:
    return f"| {label} | " + " | ".join(values) + " |"


def print_tables(results: dict[str, dict]) -> None:
    """Markdown tables: rate-distortion, the field's metrics, and the body per point (ratios to the reference)."""
    labels = {name: label(name) for name in results}
    print("\nper-part error / per-pose-mean reference (unseen languages)\n")
    print(table_row("variant", [TITLES[p] for p in PARTS] + ["codes used", "perplexity", "bits/frame", "train min"]))
    print(table_row("---", ["---"] * (len(PARTS) + 4)))
    for name, r in results.items():
        codes = "-" if name == "none" else f"{r['codebook_utilization']:.1%}"  # residual: its k codebooks pooled
        perplexity = "-" if name == "none" else f"{r['perplexity']:.0f}"
        bits = f"({r['bits_per_frame']:.0f}, float)" if name == "none" else f"{r['bits_per_frame']:.1f}"
        print(table_row(labels[name], [f"{r[metric_name('ratio', p)]:.2f}" for p in PARTS]
                        + [codes, perplexity, bits, f"{r['train_minutes']:.1f}"]))
    for name, r in results.items():
        if r.get("part_codes"):
            used = ", ".join(f"{part} {share:.0%} of {size:,}" for part, (share, size) in r["part_codes"].items())
            print(f"\n{labels[name]}: codes used per part: {used}")
    print("\nthe field's metrics, ratios: motion error (own mean removed) / motion size; handshape (wrist-aligned);"
          " nDTW-MJE, DTWp and nDTWp (pose-evaluation, hands) / reference; jitter and acceleration error / the"
          " original's acceleration\n")
    field = [f"motion {TITLES[p]}" for p in PARTS] + [f"handshape {TITLES[h]}" for h in HANDS]
    field += [f"DTW {TITLES[p]}" for p in PARTS] + ["DTWp", "nDTWp", "jitter", "accel error"]
    print(table_row("variant", field))
    print(table_row("---", ["---"] * len(field)))
    for name, r in results.items():
        values = [r[metric_name("ratio_motion", p)] for p in PARTS] + [r[metric_name("ratio_handshape", h)] for h in HANDS]
        values += [r[metric_name("ratio_dtw", p)] for p in PARTS] + [r[metric_name("ratio", k)] for k in ("dtwp", "ndtwp")]
        values += [r["ratio_jitter"], r["ratio_accel"]]
        print(table_row(labels[name], [f"{v:.2f}" for v in values]))
    print("\npose-evaluation's DTWp (pixels) and nDTWp (shoulder widths), per pose, beside the trivial reference's\n")
    print(table_row("variant", ["DTWp", "DTWp reference", "nDTWp", "nDTWp reference"]))
    print(table_row("---", ["---"] * 4))
    for name, r in results.items():
        values = [r[k] for metric in ("dtwp", "ndtwp") for k in (metric, metric_name("reference", metric))]
        print(table_row(labels[name], [f"{v:.2f}" for v in values]))
    print("\nper held-out language, error / reference\n")
    languages = next(iter(results.values()))["languages"]
    print(table_row("variant", [f"{lang} {TITLES[p]}" for lang in languages for p in PARTS]))
    print(table_row("---", ["---"] * len(PARTS) * len(languages)))
    for name, r in results.items():
        print(table_row(labels[name], [f"{v[p]:.2f}" for v in r["languages"].values() for p in PARTS]))
    print("\nthe pose that weighs most in each part: its share of the part's error, the part's ratio without it\n")
    print(table_row("variant", [TITLES[p] for p in PARTS]))
    print(table_row("---", ["---"] * len(PARTS)))
    for name, r in results.items():
        cells = []
        for part in PARTS:
            top, share, without = heaviest(r["poses"], part)
            cells.append(f"{top['id']} ({top['frames']} frames): {share:.0%}, {without:.2f} without")
        print(table_row(labels[name], cells))
    points = [p.lower().replace("_", " ") for p in skeleton.canonical_header().components[0].points]
    print("\nbody per point, error / reference\n")
    print(table_row("variant", points[skeleton.PARTS["body"]]))
    print(table_row("---", ["---"] * len(points[skeleton.PARTS["body"]])))
    for name, r in results.items():
        print(table_row(labels[name], [f"{v:.2f}" for v in r["body_points"]]))


def check_targets(results: dict[str, dict]) -> list[str]:
    """Issues 15's and 24's targets on the unseen languages, each with MET / MISSED."""
    checks = []
    parts = list(skeleton.PARTS)
    for name in (n for n in TEN_BITS if n in results):
        r, bits = results[name], "10 bits" if name == "1" else label(name)
        checks.append((f"{bits}: every part <= 1.0x", all(r[metric_name("ratio", p)] <= 1.0 for p in parts)))
        checks.append((f"{bits}: >= 60 % of the codes used", r["codebook_utilization"] >= 0.6))
        checks.append((f"{bits}: hand motion <= 0.5x", all(r[metric_name("ratio_motion", h)] <= 0.5 for h in HANDS)))
        checks.append((f"{bits}: mean acceleration <= 1.2x the original's", r["ratio_jitter"] <= 1.2))
    for name in (n for n in FORTY_BITS if n in results):
        r, bits = results[name], "40 bits" if name == "4" else label(name)
        checks.append((f"{bits}: every part <= 0.5x", all(r[metric_name("ratio", p)] <= 0.5 for p in parts)))
        checks.append((f"{bits}: every part <= 0.6x", all(r[metric_name("ratio", p)] <= 0.6 for p in parts)))
        checks.append((f"{bits}: hand motion <= 0.4x", all(r[metric_name("ratio_motion", h)] <= 0.4 for h in HANDS)))
    overall = metric_name("ratio", "all")
    for k in ("1", "2", "4"):
        if k in results and f"residual@{k}" in results:
            residual, product = results[f"residual@{k}"][overall], results[k][overall]
            checks.append((f"residual, first {k}: overall within 5 % of {label(k)} ({residual:.3f} vs {product:.3f})",
                           residual <= 1.05 * product))
    return [f"{'MET   ' if ok else 'MISSED'} {text}" for text, ok in checks]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every run on the fingerspelling split: data, held-out languages, size, threads, folder, keys."""
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    parser.add_argument("--held-out", default=",".join(HELD_OUT))
    parser.add_argument("--quick", action="store_true", help="a smaller network, batch and run (QUICK)")
    parser.add_argument("--threads", type=int, help="torch threads (default: 1 with --quick: where other jobs share "
                        "the cores, a small model trains ~10x faster on one; else torch's default)")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary folder)")
    parser.add_argument("--train", type=Path, help="YAML file with `train` keys that override the benchmark's")


def set_up(args: argparse.Namespace) -> tuple[dict, dict, dict, Path]:
    """Threads, logging and W&B set for a benchmark, the data prepared: the base ``train`` keys (TRAIN, or with
    QUICK), the user's overrides, the prepared files (:func:`prepare`, with ``held_out``) and the work folder."""
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("WANDB_MODE", "disabled")
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
    base = {**TRAIN, **(QUICK if args.quick else {})}
    held_out = set(args.held_out.split(","))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sign-vq-quality-"))
    files = {**prepare(corpus(args.data), held_out, work), "held_out": sorted(held_out)}
    overrides = yaml.safe_load(args.train.read_text())["train"] if args.train else {}
    return base, overrides, files, work


def describe(files: dict) -> str:
    """The split in words: threads, training languages and poses, the held-out languages and their poses."""
    return (f"{torch.get_num_threads()} threads; train = {files['languages_train']} languages ({files['poses_train']} "
            f"poses), test = {', '.join(files['held_out'])} ({files['poses_test']} poses, never seen)")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--steps", type=int, help="training steps per variant")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="codebooks per frame, none (no quantizer), residual, parts10/parts40 (one per part)")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    if unknown := sorted(set(names) - set(VARIANTS)):
        parser.error(f"--variants {','.join(unknown)}: choose from {','.join(VARIANTS)}")
    base, overrides, files, work = set_up(args)
    base["max_steps"] = steps = args.steps or base["max_steps"]
    results: dict[str, dict] = {}
    for name in names:
        results.update(run_variant(name, variant_config(base, overrides, VARIANTS[name]), files, work))

    print(f"\nquality: {steps} steps per variant on {describe(files)}")
    print_tables(results)
    print("\ntargets (issues 15 and 24):\n" + "\n".join(check_targets(results)))
    report = {"steps": steps, "quick": args.quick, "threads": torch.get_num_threads(),
              "languages_test": files["held_out"], "overrides": overrides, "variants": results,
              **{k: v for k, v in files.items() if not isinstance(v, Path) and k != "held_out"}}
    (work / "quality.json").write_text(json.dumps(report, indent=1))
    print(f"details: {work / 'quality.json'}")
    return report


if __name__ == "__main__":
    main()

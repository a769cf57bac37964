"""The GPU path in one short run (issue 25): `make bench-gpu`, `python -m benchmarks.gpu [--output FILE.json]`.

Five sections, each measured on a training archive built the project's own way (normalize -> stats -> archive) from
the bundled examples and long poses made of them, each reporting its own error instead of stopping the run:

1. ``train``: the default model and a GPU-sized one (8+8 layers, d_model 512, batch 128 x 512 frames on a GPU):
   steps/s, real frames/s, peak GPU memory, GPU busy fraction and the share of step time spent waiting for data.
2. ``precision``: bf16-mixed against float32 after the same steps: loss, codebook utilization, codes in range, speed.
3. ``ddp``: `sign-vq train` under `torchrun --nproc_per_node=1` (DDP, NCCL on a GPU, gloo on a CPU); a SIGTERM at a
   known step, `last.ckpt`, then the resumed run's weights against an uninterrupted run's.
4. ``encode``: the same poses encoded on the GPU and on the CPU: differing frames, frames/s on each.
5. ``compile``: `torch.compile` of the model (masks, FSQ) in training: whether it works and the time per step.

Without CUDA it runs on the CPU; ``--device cpu --quick`` is the small variant the tests run (under a minute on
2 cores), and it says that the GPU figures are missing. docs/gpu.md explains every figure.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # the run's wall time counts the imports below

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from sign_vq.api import Reduced, normalized, read_reduced, write_pose
from sign_vq.config import TrainConfig, train_config
from sign_vq.dataset.archive import build_archive
from sign_vq.dataset.normalize import normalize_shard
from sign_vq.errors import UserError
from sign_vq.formats.posezip import PoseZip
from sign_vq.formats.statistics import merge_shards, write_stats
from sign_vq.model.checkpoint import load_on, read_checkpoint
from sign_vq.model.codes import encode_arrays
from sign_vq.poses.skeleton import make_pose
from sign_vq.training.callbacks import NonFiniteGuard
from sign_vq.training.data import PoseDataModule
from sign_vq.training.module import PoseVQModule
from sign_vq.training.trainer import _quiet_third_parties, _trainer

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "poses"
SECTIONS = ("train", "precision", "ddp", "encode", "compile")
LARGE = {"d_model": 512, "heads": 8, "encoder_layers": 8, "decoder_layers": 8}
BACKEND = re.compile(r"backend_name: (\w+)")
QUIET = {"val_every": 100_000, "checkpoint_every": 100_000, "log_every": 100_000, "wandb": {"mode": "disabled"}}


@dataclass(frozen=True)
class Plan:
    """How much each section runs: full on a GPU (within 5 minutes), tiny with ``--quick``."""

    long_poses: int  # poses of long_frames frames made from the examples, so training windows are full
    long_frames: int
    workers: int
    train: dict[str, dict]  # model name -> train overrides
    precision: dict
    ddp: dict
    stop_at: int
    compile: dict
    limit_s: float  # a section whose estimate would end the run after this many seconds is skipped
    estimates_s: dict[str, float] = field(default_factory=dict)


def plan_for(quick: bool) -> Plan:
    if quick:
        # windows of 16 frames: nearly every crop is full, so a compiled model sees one shape
        small = {"batch_size": 4, "max_frames": 16, "model": {"d_model": 32, "heads": 2}}
        return Plan(
            long_poses=4, long_frames=64, workers=1,
            train={"default": {"batch_size": 4, "max_frames": 64, "max_steps": 8},
                   "large": {"batch_size": 2, "max_frames": 16, "max_steps": 3, "model": LARGE}},
            precision={**small, "max_steps": 8}, ddp={**small, "max_steps": 6}, stop_at=3,
            compile={**small, "max_steps": 6}, limit_s=math.inf,  # the tests run every section
        )
    workers = max(1, min(8, (os.cpu_count() or 2) - 2))
    return Plan(
        long_poses=64, long_frames=600, workers=workers,
        train={"default": {"max_steps": 80},
               "large": {"batch_size": 128, "max_frames": 512, "max_steps": 30, "model": LARGE}},
        precision={"max_steps": 300}, ddp={"max_steps": 40}, stop_at=25,
        compile={"max_steps": 80}, limit_s=290,  # 5 minutes with the imports
        estimates_s={"train": 45, "precision": 40, "ddp": 60, "encode": 10, "compile": 90},
    )


@dataclass
class Setup:
    """What every section works on."""

    device: str
    quick: bool
    plan: Plan
    work: Path
    poses: Path  # the .pose files (examples and long poses)
    archive: Path
    shard: Path
    stats: Path
    shared: dict = field(default_factory=dict)  # results one section leaves for another (e.g. a model checkpoint)


# --------------------------------------------------------------------------------------------------------- data


def long_poses(files: list[Path], folder: Path, count: int, frames: int) -> None:
    """``count`` .pose files of ``frames`` frames: the examples' 178 points played one after another, each file
    starting elsewhere (so random crops of training's ``max_frames`` are full windows)."""
    reduced = [r for r in map(readable, files) if r is not None]
    data = np.concatenate([r.data for r in reduced])
    confidence = np.concatenate([r.confidence for r in reduced])
    first = reduced[0]
    for i in range(count):
        chosen = (np.arange(frames) + i * len(data) // count) % len(data)
        pose = make_pose(data[chosen], confidence[chosen], first.fps, first.width, first.height)
        write_pose(pose, folder / "long" / f"long-{i:03d}.pose")


def readable(path: Path) -> Reduced | None:
    """The file's 178 points, or None for a file that is not MediaPipe Holistic (normalize reports those)."""
    try:
        return read_reduced(path)
    except UserError:
        return None


def prepare(work: Path, data: Path, device: str, quick: bool) -> Setup:
    """Examples + long poses -> shard -> statistics -> archive (20 % validation), as the workflow builds them."""
    plan = plan_for(quick)
    poses = work / "poses"
    shutil.copytree(data, poses / "examples")
    long_poses(sorted((poses / "examples").rglob("*.pose")), poses, plan.long_poses, plan.long_frames)
    files = sorted(poses.rglob("*.pose"))
    shard, stats, archive = work / "shard.zip", work / "stats.json", work / "archive.zip"
    normalize_shard(files, shard, root=poses)
    write_stats(merge_shards([shard]), stats)
    build_archive([shard], archive, val_fraction=0.2)
    return Setup(device, quick, plan, work, poses, archive, shard, stats)


def config_for(setup: Setup, overrides: dict, precision: str | None = None, validate: bool = False) -> TrainConfig:
    """The train config of a benchmark run: ``overrides`` on the defaults, on the benchmark's device; with
    ``validate``, one validation at the last step (else none: validation beyond max_steps never comes)."""
    values = {**QUIET, "num_workers": setup.plan.workers, **overrides}
    if validate:
        values["val_every"] = values.get("max_steps", 300)
    values["precision"] = precision or default_precision(setup.device)
    values["accelerator"] = "cuda" if setup.device == "cuda" else "cpu"
    return train_config(values)


def default_precision(device: str) -> str:
    """What a GPU node trains in (bf16 where the card has it); float32 on a CPU."""
    if device == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


# ----------------------------------------------------------------------------------------------- timed training


class StepTimer(Callback):
    """Per training step: wall time, the time before it spent waiting for its batch (next batch + transfer), real
    frames (counted on the device, no sync); on CUDA the kernels' busy time from the profiler, and NVML's
    utilization read at each step's end as a cross-check. Steps before ``skip`` (start-up, compilation,
    autotuning) are left out."""

    def __init__(self, skip: int):
        self.skip = skip
        self.ends: list[float] = []
        self.waits: list[float] = []
        self.frames: list[torch.Tensor] = []
        self.first_step_s = math.nan
        self._start = math.nan
        self.utilization: list[float] | None = None  # NVML's percentages; None until measured or if unavailable
        self.profiler: torch.profiler.profile | None = None
        self.busy_s = math.nan
        self.busy_error: str | None = None

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: dict, batch_idx: int) -> None:
        now = time.perf_counter()
        if self.ends:
            self.waits.append(now - self.ends[-1])
        else:
            self._start = now
        self.frames.append((~batch["padding"]).sum())
        if len(self.ends) == self.skip and module.device.type == "cuda":
            self._profile(start=True)
            self.utilization = []

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        self.ends.append(time.perf_counter())
        if len(self.ends) == 1:
            self.first_step_s = self.ends[0] - self._start
        if self.utilization is not None:
            try:
                self.utilization.append(torch.cuda.utilization())
            except Exception:  # no NVML bindings: the profiler's figure stands alone
                self.utilization = None
        if self.profiler is not None and trainer.global_step >= trainer.max_steps:
            self._profile(start=False)

    def _profile(self, start: bool) -> None:
        """Start or stop the kernel trace; a profiler that fails leaves the busy fraction unknown, nothing else."""
        try:
            if start:
                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
                self.profiler.__enter__()
            else:
                torch.cuda.synchronize()
                self.profiler.__exit__(None, None, None)
                self.busy_s = kernel_seconds(self.profiler)
        except Exception as error:
            self.busy_error = one_line(error)
        if not start:
            self.profiler = None

    def figures(self) -> dict:
        window = self.ends[-1] - self.ends[self.skip - 1]
        steps = len(self.ends) - self.skip
        frames = int(torch.stack(self.frames[self.skip :]).sum())
        figures = {
            "steps_per_s": steps / window,
            "real_frames_per_s": frames / window,
            "data_wait_share": sum(self.waits[self.skip - 1 :]) / window,
            "gpu_busy": self.busy_s / window if math.isfinite(self.busy_s) else None,
            "gpu_utilization_nvml": float(np.mean(self.utilization)) / 100 if self.utilization else None,
            "first_step_s": self.first_step_s,
            "measured_steps": steps,
        }
        if self.busy_error:
            figures["gpu_busy_error"] = self.busy_error
        return figures


def kernel_seconds(profiler: torch.profiler.profile) -> float:
    """Seconds in which at least one kernel (or copy) ran on the GPU: the union of the profiled device intervals."""
    device = torch.autograd.DeviceType.CUDA
    spans = sorted((e.time_range.start, e.time_range.end) for e in profiler.events() if e.device_type == device)
    if not spans:
        raise RuntimeError("the profiler saw no GPU activity")
    busy, reach = 0.0, -math.inf
    for start, end in spans:
        if end > reach:
            busy += end - max(start, reach)
            reach = end
    return busy / 1e6


@dataclass
class Fit:
    """A finished in-process training run."""

    module: PoseVQModule
    trainer: L.Trainer
    data: PoseDataModule
    figures: dict


def fit(setup: Setup, config: TrainConfig, prepare_module: Callable[[PoseVQModule], None] | None = None) -> Fit:
    """Train in this process with the trainer `sign-vq train` builds (plus its per-step finiteness check) and time
    it; ``prepare_module`` may change the module first (e.g. compile its model)."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    stats = merge_shards([setup.shard])
    module = PoseVQModule(config, stats.mean, stats.std)
    if prepare_module:
        prepare_module(module)
    data = PoseDataModule(setup.archive, config)
    timer = StepTimer(skip=max(1, config.max_steps // 4))
    trainer = _trainer(config, [NonFiniteGuard("the benchmark"), timer], [], setup.work / "lightning")
    if setup.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, datamodule=data)
    figures = timer.figures()
    figures["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30 if setup.device == "cuda" else None
    metrics = trainer.callback_metrics
    figures["last_train_loss"] = float(metrics["train/loss"])
    if "val/loss" in metrics:
        figures["val_loss"] = float(metrics["val/loss"])
        figures["codebook_utilization"] = float(metrics["val/codebook_utilization"])
    return Fit(module, trainer, data, figures)


# ----------------------------------------------------------------------------------------------------- sections


def section_train(setup: Setup) -> dict:
    """Throughput of the default and the GPU-sized model in the GPU's training precision."""
    figures = {}
    for name, overrides in setup.plan.train.items():
        config = config_for(setup, overrides)
        result = fit(setup, config).figures
        result["batch"] = f"{config.batch_size} x {config.max_frames}"
        result["precision"] = config.precision
        figures[name] = result
    return figures


def codes_in_range(run: Fit, device: str) -> bool:
    """Every code of every validation window within 0..codebook_size-1, computed under the run's own precision."""
    model, trainer = run.module.model.to(device), run.trainer
    lowest, highest = math.inf, -math.inf
    with torch.no_grad(), trainer.precision_plugin.forward_context():
        for batch in run.data.val_dataloader():
            batch = {k: v.to(device) for k, v in batch.items()}
            observed = batch["observed"] & ~batch["padding"][..., None]
            _, codes = model(batch["poses"], observed, batch["padding"])
            lowest, highest = min(lowest, int(codes.min())), max(highest, int(codes.max()))
    return 0 <= lowest and highest < model.codebook_size


def section_precision(setup: Setup) -> dict:
    """bf16-mixed against float32 after the same steps (same seed, same batches)."""
    figures = {}
    for precision in ("32-true", "bf16-mixed"):
        run = fit(setup, config_for(setup, setup.plan.precision, precision, validate=True))
        figures[precision] = {**pick(run.figures, "steps_per_s", "val_loss", "codebook_utilization"),
                              "codes_in_range": codes_in_range(run, setup.device)}
        if precision == "32-true":
            setup.shared["model"] = setup.work / "precision-fp32.ckpt"
            run.trainer.save_checkpoint(setup.shared["model"], weights_only=True)
    fp32, bf16 = figures["32-true"], figures["bf16-mixed"]
    figures["bf16_speedup"] = bf16["steps_per_s"] / fp32["steps_per_s"]
    figures["utilization_gap_points"] = 100 * (bf16["codebook_utilization"] - fp32["codebook_utilization"])
    figures["loss_ratio_bf16_to_fp32"] = bf16["val_loss"] / fp32["val_loss"]
    return figures


def pick(values: dict, *keys: str) -> dict:
    return {key: values[key] for key in keys}


def torchrun(setup: Setup, config: Path, output: Path, env: dict) -> subprocess.Popen:
    """`sign-vq train` under `torchrun --standalone --nproc_per_node=1` (started, not waited for)."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
        "-m", "sign_vq.cli", "train", "--config", str(config), "--archive", str(setup.archive),
        "--stats", str(setup.stats), "--output", str(output),
    ]
    log = open(output.with_suffix(".log"), "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def section_ddp(setup: Setup) -> dict:
    """An uninterrupted run and one stopped by SIGTERM at a known step (side by side), then the stopped one resumed."""
    plan = setup.plan
    values = {**QUIET, **plan.ddp, "val_every": plan.ddp["max_steps"], "num_workers": plan.workers,
              "accelerator": "cuda" if setup.device == "cuda" else "cpu",
              "precision": default_precision(setup.device)}
    config = setup.work / "ddp.yaml"
    config.write_text(yaml.safe_dump({"train": values}))
    # c10d logs the process group's backend when DDP wraps the model: the evidence that DDP ran, and on what
    env = {**os.environ, "WANDB_MODE": "disabled", "TORCH_DISTRIBUTED_DEBUG": "INFO", "TORCH_CPP_LOG_LEVEL": "INFO",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    reference, stopped = setup.work / "ddp-reference", setup.work / "ddp-stopped"
    runs = [torchrun(setup, config, reference, env),
            torchrun(setup, config, stopped, {**env, "SIGN_VQ_STOP_AT_STEP": f"{plan.stop_at}:term"})]
    codes = [run.wait() for run in runs]
    last = read_checkpoint(stopped / "checkpoints" / "last.ckpt")["global_step"]
    resumed = torchrun(setup, config, stopped, env).wait()
    logs = [stopped.with_suffix(".log").read_text(), reference.with_suffix(".log").read_text()]
    if codes[0] or resumed:
        raise RuntimeError(f"torchrun exited {codes[0]} (reference) / {resumed} (resumed): {last_line(logs)}")
    expected = read_checkpoint(reference / "model.ckpt")["state_dict"]
    actual = read_checkpoint(stopped / "model.ckpt")["state_dict"]
    differences = [float((expected[k].float() - actual[k].float()).abs().max()) for k in expected]
    return {
        "launcher": "torchrun --nproc_per_node=1",
        "process_group": ",".join(sorted(set(BACKEND.findall("".join(logs))))) or "none (DDP did not run)",
        "signal_at_step": plan.stop_at,
        "stopped_run_exit": codes[1],
        "last_ckpt_step": last,
        "resumed": "resuming from" in logs[0],
        "max_steps": plan.ddp["max_steps"],
        "same_weights": expected.keys() == actual.keys() and max(differences) == 0.0,
        "max_weight_difference": max(differences),
    }


def last_line(logs: list[str]) -> str:
    lines = [line for log in logs for line in log.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def encode_timed(checkpoint: Path, device: str, poses: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list, float]:
    """Codes of ``poses`` with the model on ``device`` and the frames encoded per second (after one warm-up pose)."""
    model = load_on(checkpoint, device)
    encode_arrays(model, poses[:1])
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    codes = encode_arrays(model, poses)
    seconds = time.perf_counter() - start
    return codes, sum(len(data) for data, _ in poses) / seconds


def section_encode(setup: Setup) -> dict:
    """Every pose of the shard encoded on the CPU and on the GPU with the float32 model of ``precision``."""
    checkpoint = setup.shared.get("model")
    if checkpoint is None:
        raise RuntimeError("no model: the precision section did not train one")
    shard = PoseZip(setup.shard)
    poses = [normalized(shard.read(i)) for i in range(len(shard))]
    cpu_codes, cpu_rate = encode_timed(checkpoint, "cpu", poses)
    figures = {"poses": len(poses), "frames": sum(len(d) for d, _ in poses), "cpu_frames_per_s": cpu_rate,
               "cpu_threads": torch.get_num_threads(), "gpu_frames_per_s": None, "differing_frames": None}
    if setup.device == "cuda":
        gpu_codes, gpu_rate = encode_timed(checkpoint, "cuda", poses)
        differing = sum(int((a != b).any(-1).sum()) for a, b in zip(cpu_codes, gpu_codes))
        figures.update(gpu_frames_per_s=gpu_rate, gpu_speedup=gpu_rate / cpu_rate, differing_frames=differing,
                       differing_share=differing / figures["frames"])
    return figures


def section_compile(setup: Setup) -> dict:
    """The same training with the model eager and compiled (inductor on a GPU; aot_eager for ``--quick`` on a CPU,
    which checks the capture without minutes of C++ compilation)."""
    import torch._dynamo

    backend = "aot_eager" if setup.quick and setup.device == "cpu" else "inductor"
    config = config_for(setup, setup.plan.compile)
    eager = fit(setup, config).figures
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()

    def compiled(module: PoseVQModule) -> None:
        module.model = torch.compile(module.model, backend=backend)

    try:
        compiled_figures = fit(setup, config, compiled).figures
    except Exception as error:  # the answer to "does it work" is part of the figures
        return {"backend": backend, "works": False, "error": one_line(error),
                "eager_steps_per_s": eager["steps_per_s"]}
    return {
        "backend": backend,
        "works": True,
        "graph_breaks": sum(torch._dynamo.utils.counters["graph_break"].values()),
        "graphs_compiled": torch._dynamo.utils.counters["stats"]["unique_graphs"],
        "eager_steps_per_s": eager["steps_per_s"],
        "compiled_steps_per_s": compiled_figures["steps_per_s"],
        "speedup": compiled_figures["steps_per_s"] / eager["steps_per_s"],
        "first_step_s": compiled_figures["first_step_s"],
        "last_loss_ratio_compiled_to_eager": compiled_figures["last_train_loss"] / eager["last_train_loss"],
    }


RUNNERS: dict[str, Callable[[Setup], dict]] = {
    "train": section_train, "precision": section_precision, "ddp": section_ddp,
    "encode": section_encode, "compile": section_compile,
}


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


def run_sections(setup: Setup, names: tuple[str, ...], started: float, done: Callable[[dict], None]) -> dict:
    """Each section's figures, or its own ``failed: ...`` / ``skipped: ...`` status; never raises. ``done`` gets
    the results so far after each section (a run stopped from outside keeps what it measured)."""
    results: dict = {}
    for name in names:
        spent = time.perf_counter() - started
        estimate = setup.plan.estimates_s.get(name, 0.0)
        if spent + estimate > setup.plan.limit_s:
            results[name] = {"status": f"skipped: {spent:.0f} s spent + ~{estimate:.0f} s would pass "
                                       f"the {setup.plan.limit_s:.0f} s limit"}
            continue
        start = time.perf_counter()
        try:
            results[name] = {"status": "ok", "figures": RUNNERS[name](setup)}
        except Exception as error:
            traceback.print_exc(file=sys.stderr)
            results[name] = {"status": f"failed: {one_line(error)}"}
        results[name]["seconds"] = time.perf_counter() - start
        print(f"[{name}: {results[name]['status']}, {results[name]['seconds']:.1f} s]", file=sys.stderr, flush=True)
        done(results)
    return results


# ------------------------------------------------------------------------------------------------------- report


def flatten(figures: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in figures.items():
        if isinstance(value, dict):
            rows += flatten(value, f"{prefix}{key}.")
        else:
            rows.append((prefix + key, value))
    return rows


def shown(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def table(report: dict) -> str:
    """The report as one table: section, figure, value."""
    lines = [f"{'section':<10} {'figure':<42} value", "-" * 72]
    for name, result in report["sections"].items():
        lines.append(f"{name:<10} {'status':<42} {result['status']} ({result['seconds']:.1f} s)"
                     if "seconds" in result else f"{name:<10} {'status':<42} {result['status']}")
        lines += [f"{'':<10} {key:<42} {shown(value)}" for key, value in flatten(result.get("figures", {}))]
    return "\n".join(lines)


def machine(device: str) -> dict:
    info = {"device": device, "torch": torch.__version__, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when there is one, else cpu")
    parser.add_argument("--quick", action="store_true", help="the tiny variant (the tests run it on a CPU)")
    parser.add_argument("--output", type=Path, help="write the report as JSON here")
    parser.add_argument("--data", type=Path, default=EXAMPLES, help="folder of .pose files (default: the examples)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine; use --device cpu")
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)}; choose from {SECTIONS}")
    return args


def main(argv: list[str] | None = None) -> int:
    started = STARTED if argv is None else time.perf_counter()  # as a command: from before the imports
    args = parse_args(argv)
    _quiet_third_parties()
    note = (f"GPU figures: measured on {torch.cuda.get_device_name()}" if args.device == "cuda"
            else "GPU figures: missing (ran on the CPU: no CUDA device was used)")
    report = {"note": note, "machine": machine(args.device), "quick": args.quick, "sections": {}}

    def save(sections: dict) -> None:
        report.update(sections=sections, wall_s=time.perf_counter() - started)
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(report, indent=2))

    with tempfile.TemporaryDirectory(prefix="sign-vq-gpu-") as tmp:
        setup = prepare(Path(tmp), args.data, args.device, args.quick)
        report["prepare_s"] = time.perf_counter() - started
        names = tuple(name for name in SECTIONS if name in args.sections.split(","))
        save(run_sections(setup, names, started, save))
    print(f"\n{note}\n{json.dumps(report['machine'])}\n{table(report)}\nwall time {report['wall_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

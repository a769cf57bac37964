"""`sign-vq render` and the training RenderCallback, on the small model trained on the examples."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import imageio.v3 as iio
import lightning as L
import numpy as np
import pytest
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from sign_vq.cli import main
from sign_vq.config import RenderConfig, train_config
from sign_vq.evaluation.render import safe_id, unique_names
from sign_vq.formats.posezip import PoseZip
from sign_vq.formats.statistics import load_stats
from sign_vq.model.checkpoint import load_model
from sign_vq.poses import skeleton
from sign_vq.training.callbacks import RenderCallback
from sign_vq.training.data import PoseDataModule
from sign_vq.training.module import PoseVQModule

RENDER_ONE = RenderConfig(num_poses=1, metric_poses=0, max_frames=4, gif=False)  # one short mp4, metrics on all

FPS_29 = "pose-format/0ff215ef4f1f111e217e2cefee0adc77.pose"  # 29.89 fps


@pytest.fixture(scope="module")
def val_archive(trained, tmp_path_factory) -> Path:
    """The examples with a validation split (hash of the id, 30 %)."""
    path = tmp_path_factory.mktemp("val") / "archive.zip"
    assert main(["archive", "--val-fraction", "0.3", "--output", str(path), str(trained.shard)]) == 0
    return path


def video_frames(path: Path) -> tuple[int, float, int, int]:
    capture = cv2.VideoCapture(str(path))
    try:
        assert capture.isOpened(), path
        count = 0
        while capture.read()[0]:
            count += 1
        return count, capture.get(cv2.CAP_PROP_FPS), int(capture.get(3)), int(capture.get(4))
    finally:
        capture.release()


def test_render_writes_videos_metrics_and_plot(trained, val_archive, tmp_path):
    out = tmp_path / "render"
    code = main(["render", "--model", str(trained.model), "--archive", str(val_archive), "--output", str(out),
                 "--num-poses", "2", "--max-frames", "30"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "metrics.json", "metrics.png", "videos"]
    val = [e for e in PoseZip(val_archive).entries if e["split"] == "val"]
    assert len(val) >= 2
    report = json.loads((out / "metrics.json").read_text())
    assert report["split"] == "val" and report["poses"] == len(val)
    metrics = report["metrics"]
    for part in skeleton.PARTS:
        for key in ("error", "reference", "ratio"):
            assert f"{key}_{part}" in metrics
    assert metrics["frames"] == sum(e["frames"] for e in val)
    for key in ("mse", "reference_mse", "jitter", "codebook_utilization", "perplexity", "bits_per_frame",
                "compression_ratio"):
        assert key in metrics
    assert 0 < metrics["codebook_utilization"] <= 1
    table = {row["metric"]: row for row in report["table"]}
    assert {"error_body", "error_face", "error_left_hand", "error_right_hand", "mse", "bits_per_frame"} <= set(table)
    for row in report["table"]:
        assert set(row) == {"metric", "model", "reference", "ratio"}
    assert table["bits_per_frame"]["reference"] == skeleton.NUM_POINTS * 3 * 16
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["metric"] for row in rows] == [row["metric"] for row in report["table"]]
    assert float(rows[0]["model"]) == pytest.approx(report["table"][0]["model"])
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    videos = sorted((out / "videos").iterdir())
    assert [p.suffix for p in videos] == [".gif", ".mp4", ".gif", ".mp4"]
    for video, entry in zip(report["videos"], val[:2]):
        assert video["id"] == entry["id"]
        frames, fps, width, height = video_frames(out / video["mp4"])
        assert frames == min(entry["frames"], 30) == video["frames"]
        assert fps == pytest.approx(entry["fps"], rel=1e-3)
        assert width % 2 == 0 and height % 2 == 0 and width > height  # two panels side by side
        gif = iio.imread(out / video["gif"], index=None)
        assert gif.shape[0] == frames and gif.shape[-1] in (3, 4)
        assert (out / video["mp4"]).name == f"{safe_id(entry['id'])}.mp4"


def test_render_without_gif_falls_back_to_train_and_replaces_old_videos(trained, tmp_path):
    out = tmp_path / "render"
    args = ["render", "--model", str(trained.model), "--archive", str(trained.archive), "--output", str(out)]
    assert main([*args, "--num-poses", "3", "--max-frames", "5"]) == 0
    assert len(list((out / "videos").glob("*.gif"))) == 3
    assert main([*args, "--num-poses", "1", "--max-frames", "5", "--no-gif"]) == 0
    assert [p.suffix for p in (out / "videos").iterdir()] == [".mp4"]  # the earlier videos are gone
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "metrics.json", "metrics.png", "videos"]
    report = json.loads((out / "metrics.json").read_text())
    assert report["split"] == "train" and report["poses"] == len(trained.files)
    assert main([*args, "--num-poses", "0", "--metric-poses", "2"]) == 0
    assert json.loads((out / "metrics.json").read_text())["poses"] == 2
    assert main([*args, "--num-poses", "0", "--metric-poses", "0"]) == 0  # 0: the whole split
    assert json.loads((out / "metrics.json").read_text())["poses"] == len(trained.files)


def test_render_usage_errors_exit_2_and_write_nothing(trained, tmp_path):
    base = ["render", "--model", str(trained.model), "--archive", str(trained.archive), "--output", str(tmp_path / "o")]
    for flags in (["--num-poses", "-1"], ["--max-frames", "0"], ["--metric-poses", "-1"]):
        assert main([*base, *flags]) == 2
    assert not (tmp_path / "o").exists()


def test_render_plays_at_the_poses_own_fps(trained, data_dir, tmp_path):
    """A 29.89-fps file renders at 29.89 fps, not 25 or 30."""
    source = data_dir / FPS_29
    shard, archive = tmp_path / "shard.zip", tmp_path / "archive.zip"
    assert main(["normalize", "--output", str(shard), "--root", str(data_dir), str(source)]) == 0
    assert main(["archive", "--val-fraction", "0", "--output", str(archive), str(shard)]) == 0
    out = tmp_path / "render"
    assert main(["render", "--model", str(trained.model), "--archive", str(archive), "--output", str(out),
                 "--max-frames", "20"]) == 0
    (mp4,) = (out / "videos").glob("*.mp4")
    frames, fps, _, _ = video_frames(mp4)
    assert frames == 20
    assert fps == pytest.approx(29.89, abs=0.01)
    assert json.loads((out / "metrics.json").read_text())["videos"][0]["fps"] == pytest.approx(29.89, abs=0.01)


class RecordingLogger:
    def __init__(self):
        self.calls: list[tuple[dict, int]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.calls.append((metrics, step))


def test_render_callback_runs_every_n_steps_on_rank_zero_only(trained, val_archive, tmp_path):
    callback = RenderCallback(val_archive, tmp_path / "renders", 5, RENDER_ONE)
    logger = RecordingLogger()
    module = SimpleNamespace(model=load_model(trained.model).train())
    for step in (0, 3, 4):
        callback.on_train_batch_end(SimpleNamespace(global_step=step, is_global_zero=True, loggers=[logger]), module)
    assert not logger.calls and not (tmp_path / "renders").exists()
    callback.on_train_batch_end(SimpleNamespace(global_step=5, is_global_zero=False, loggers=[logger]), module)
    assert not logger.calls  # other ranks never render
    callback.on_train_batch_end(SimpleNamespace(global_step=10, is_global_zero=True, loggers=[logger]), module)
    (metrics, step), = logger.calls
    assert step == 10 and "render/error_body" in metrics and "render/ratio_face" in metrics
    folder = tmp_path / "renders" / "step-0000010"
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.csv", "metrics.json", "metrics.png", "videos"]
    assert len(list((folder / "videos").glob("*.mp4"))) == 1
    assert module.model.training  # the model is back in training mode
    callback.on_train_batch_end(SimpleNamespace(global_step=10, is_global_zero=True, loggers=[logger]), module)
    assert len(logger.calls) == 1  # the same step (gradient accumulation) renders once


class TrainingModeProbe(Callback):
    """Records, before every training batch, whether the model is in training mode."""

    def __init__(self):
        self.modes: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.modes.append(pl_module.model.training)


def test_render_callback_inside_a_real_trainer(trained, tmp_path):
    """A real Lightning fit of a tiny model: renders at steps 2 and 4, metrics in the CSV log, training mode kept."""
    config = train_config({"max_steps": 4, "batch_size": 2, "max_frames": 16, "model": {"d_model": 32, "heads": 2}})
    stats = load_stats(trained.stats)
    callback = RenderCallback(trained.archive, tmp_path / "renders", 2, replace(RENDER_ONE, metric_poses=2))
    probe = TrainingModeProbe()
    trainer = L.Trainer(
        max_steps=4, accelerator="cpu", devices=1, callbacks=[callback, probe],
        logger=CSVLogger(str(tmp_path), name="logs"), limit_val_batches=0, num_sanity_val_steps=0,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
    )
    trainer.fit(PoseVQModule(config, stats.mean, stats.std), datamodule=PoseDataModule(trained.archive, config))
    assert trainer.global_step == 4
    assert sorted(p.name for p in (tmp_path / "renders").iterdir()) == ["step-0000002", "step-0000004"]
    for folder in (tmp_path / "renders").iterdir():
        assert sorted(p.name for p in folder.iterdir()) == ["metrics.csv", "metrics.json", "metrics.png", "videos"]
        assert json.loads((folder / "metrics.json").read_text())["poses"] == 2
    with open(tmp_path / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("render/error_body")]
    assert [int(row["step"]) for row in rows] == [2, 4]
    assert probe.modes == [True] * 4  # each render put the model back into training mode


def test_safe_id():
    assert safe_id("fingerspelling/asq/fs-sts1") == "fingerspelling_asq_fs-sts1"
    assert safe_id("a b/../c") == "a_b_.._c"
    assert safe_id("..") == "pose"
    assert unique_names(["a/b", "a b", "a_b", "c"]) == ["a_b", "a_b_", "a_b__", "c"]


def _frames(count: int = 7) -> list[np.ndarray]:
    return [np.full((48, 64, 3), 30 * i, np.uint8) for i in range(count)]


def test_mp4_falls_back_to_opencv_mp4v_without_imageio_ffmpeg(tmp_path, monkeypatch):
    from sign_vq.evaluation import videos

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # makes `import imageio_ffmpeg` fail
    assert videos.write_mp4(tmp_path / "a.mp4", _frames(), 29.89) == "mp4v"
    frames, fps, width, height = video_frames(tmp_path / "a.mp4")
    assert (frames, width, height) == (7, 64, 48) and fps == pytest.approx(29.89, abs=0.01)
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]  # no temporary file left behind


def test_mp4_is_h264_with_imageio_ffmpeg(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    from sign_vq.evaluation import videos

    assert videos.write_mp4(tmp_path / "a.mp4", _frames(), 29.89) == "h264"
    frames, fps, width, height = video_frames(tmp_path / "a.mp4")
    assert (frames, width, height) == (7, 64, 48) and fps == pytest.approx(29.89, abs=0.01)


def test_render_callback_logs_mp4_videos_to_an_offline_wandb_run(trained, val_archive, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(project="sign-vq-test", offline=True, save_dir=str(tmp_path))
    callback = RenderCallback(val_archive, tmp_path / "renders", 1, RENDER_ONE)
    try:
        report = callback.render_and_log(SimpleNamespace(loggers=[logger]), load_model(trained.model), 1)
    finally:
        logger.experiment.finish()
    name = Path(report.videos[0]["mp4"]).stem
    logged = list((tmp_path / "wandb").glob(f"offline-run-*/files/media/videos/render/video/{name}_*.mp4"))
    assert len(logged) == 1

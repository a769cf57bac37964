"""Side-by-side videos (original left, reconstruction right) drawn with pose-format's ``PoseVisualizer``.

The only module that imports OpenCV and imageio. Videos play at the pose's own fps (a float, never assumed 25/30).
MP4 is H.264 (yuv420p, plays in browsers, W&B and the Snakemake report) when ``imageio-ffmpeg`` is installed, else
OpenCV's ``mp4v`` (MPEG-4 Part 2: every OpenCV wheel can encode it, but browsers may not play it). GIFs are written
by imageio (Pillow), at a smaller size for reports.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

import cv2
import imageio.v3 as iio
import numpy as np
from pose_format.pose_visualizer import PoseVisualizer

from sign_vq.fileio import atomic_path
from sign_vq.poses import skeleton

log = logging.getLogger(__name__)
MAX_PANEL_HEIGHT = 480  # pixels: panels of larger frames are scaled down
GIF_HEIGHT = 240  # pixels: GIF height (report thumbnails)
LABELS = ("original", "reconstruction")


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def panel_size(width: int, height: int, max_height: int = MAX_PANEL_HEIGHT) -> tuple[int, int, float]:
    """Even panel width and height for a ``width`` x ``height`` frame, and the scale factor from it."""
    factor = min(1.0, max_height / max(height, 1))
    return _even(width * factor), _even(height * factor), factor


def side_by_side(
    original: np.ndarray,
    reconstruction: np.ndarray,
    observed: np.ndarray,
    fps: float,
    size: tuple[int, int],
    max_frames: int | None = None,
) -> Iterator[np.ndarray]:
    """BGR frames: ``original`` (left) and ``reconstruction`` (right), T x 178 x 3 in a ``size`` = (width, height)
    frame, each drawn at the points ``observed`` (T x 178)."""
    panel_w, panel_h, factor = panel_size(*size)
    confidence = np.asarray(observed, dtype=np.float32)
    left, right = [PoseVisualizer(skeleton.make_pose(np.asarray(p, np.float32) * factor, confidence, fps, panel_w,
                                                     panel_h)) for p in (original, reconstruction)]
    font_scale = max(panel_h / 600, 0.35)
    for a, b in zip(left.draw(max_frames=max_frames), right.draw(max_frames=max_frames)):
        for image, label in zip((a, b), LABELS):
            cv2.putText(image, label, (8, int(24 * font_scale / 0.6)), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                        (60, 60, 60), 1, cv2.LINE_AA)
        yield np.concatenate([a, np.full((panel_h, 2, 3), 128, np.uint8), b], axis=1)


def _write_h264(target: Path, frames: list[np.ndarray], fps: float) -> bool:
    """H.264 through imageio-ffmpeg's ffmpeg; False when imageio-ffmpeg is not installed."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return False
    height, width = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(target), (width, height), pix_fmt_in="bgr24", pix_fmt_out="yuv420p", fps=float(fps), codec="libx264",
        quality=None, macro_block_size=2, ffmpeg_log_level="error", output_params=["-crf", "23"],
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return True


def _write_mp4v(target: Path, frames: list[np.ndarray], fps: float) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"{target}: OpenCV cannot write mp4v video")
    for frame in frames:
        writer.write(frame)
    writer.release()


def write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> str:
    """Write BGR ``frames`` to ``path`` at ``fps``, atomically; returns the codec (``h264`` or ``mp4v``)."""
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    with atomic_path(path) as tmp:
        target = tmp.with_name(tmp.name + ".mp4")  # encoders pick the container from the extension
        try:
            codec = "h264"
            if not _write_h264(target, frames, fps):
                codec = "mp4v"
                _write_mp4v(target, frames, fps)
            os.replace(target, tmp)
        finally:
            target.unlink(missing_ok=True)
    return codec


def write_gif(path: Path, frames: list[np.ndarray], fps: float, height: int = GIF_HEIGHT) -> None:
    """Write BGR ``frames`` to ``path`` as a looping GIF at ``fps`` (scaled to ``height``), atomically."""
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    h, w = frames[0].shape[:2]
    factor = min(1.0, height / h)
    size = (_even(w * factor), _even(h * factor))
    rgb = [cv2.cvtColor(cv2.resize(f, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB) for f in frames]
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, np.stack(rgb), extension=".gif", duration=1000.0 / fps, loop=0)


def render_comparison(
    original: np.ndarray,
    reconstruction: np.ndarray,
    observed: np.ndarray,
    fps: float,
    size: tuple[int, int],
    mp4: Path,
    gif: Path | None = None,
    max_frames: int | None = None,
) -> int:
    """Draw ``original`` next to ``reconstruction`` (see :func:`side_by_side`) into ``mp4`` (and ``gif``) at
    ``fps``; returns the number of frames."""
    frames = list(side_by_side(original, reconstruction, observed, fps, size, max_frames))
    codec = write_mp4(mp4, frames, fps)
    if gif is not None:
        write_gif(gif, frames, fps)
    log.debug("%s: %d frames at %.3f fps (%s)", mp4, len(frames), fps, codec)
    return len(frames)

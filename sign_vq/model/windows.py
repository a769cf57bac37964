"""Long poses through a model of at most ``max_frames`` frames: equal windows (a function of the frame count only,
so ``decode(encode(x))`` equals the windowed reconstruction), padded and batched so windows of several poses share
a forward pass."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from sign_vq.model.network import PoseFSQAutoencoder

WINDOW_BATCH = 64  # windows per forward pass
PAD_STEP = 16  # windows are padded to a multiple of this many frames (see windowed)


def window_bounds(frames: int, max_frames: int) -> list[tuple[int, int]]:
    """Equal consecutive windows ``[start, end)`` of at most ``max_frames`` covering ``frames`` frames."""
    if frames <= 0:
        return []
    count = math.ceil(frames / max_frames)
    edges = np.linspace(0, frames, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def collate(
    windows: list[tuple[np.ndarray, ...]], device: torch.device, length: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Pad windows (tuples of arrays sharing their first axis, frames) to ``length`` frames: one batch tensor
    (B x length x ...) per array, and ``padding`` (B x length, True on padded frames)."""
    padding = np.ones((len(windows), length), dtype=bool)
    batches = [np.zeros((len(windows), length, *array.shape[1:]), dtype=array.dtype) for array in windows[0]]
    for i, window in enumerate(windows):
        padding[i, : len(window[0])] = False
        for batch, array in zip(batches, window):
            batch[i, : len(array)] = array
    return [torch.from_numpy(batch).to(device) for batch in batches], torch.from_numpy(padding).to(device)


@torch.no_grad()
def windowed(
    model: PoseFSQAutoencoder, items: list[tuple[np.ndarray, ...]], step: Callable[..., tuple[torch.Tensor, ...]]
) -> list[tuple[np.ndarray, ...]]:
    """The one windowed-inference loop: cut every item (a tuple of arrays with frames first) into the windows of
    :func:`window_bounds`, run ``step(*tensors, padding)`` on up to :data:`WINDOW_BATCH` windows at a time (windows of
    several items share a batch) and join each output back per item (frames first, on the CPU).

    A window is padded to a length that depends on its own length only (the next multiple of :data:`PAD_STEP`, at
    most ``max_frames``), and only windows of one padded length share a batch: an item's outputs never depend on the
    items it is batched with (bit for bit on a CPU), so a corpus encoded in batches gives each file's own codes."""
    max_frames = model.max_frames
    bounds = [window_bounds(len(item[0]), max_frames) for item in items]
    by_length: dict[int, list[tuple[int, int, int]]] = {}
    for i, item_bounds in enumerate(bounds):
        for a, b in item_bounds:
            by_length.setdefault(min(max_frames, -(-(b - a) // PAD_STEP) * PAD_STEP), []).append((i, a, b))
    done: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
    for length, windows in by_length.items():
        for first in range(0, len(windows), WINDOW_BATCH):
            chunk = windows[first : first + WINDOW_BATCH]
            cut = [tuple(array[a:b] for array in items[i]) for i, a, b in chunk]
            tensors, padding = collate(cut, _device(model), length)
            outputs = [(o.float() if o.is_floating_point() else o).cpu().numpy() for o in step(*tensors, padding)]
            for row, (i, a, b) in enumerate(chunk):
                done[i, a] = tuple(output[row, : b - a] for output in outputs)
    return [tuple(np.concatenate(joined) for joined in zip(*(done[i, a] for a, _ in item_bounds)))
            for i, item_bounds in enumerate(bounds)]

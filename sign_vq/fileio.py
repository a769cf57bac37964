"""Atomic writes: every output appears whole or not at all.

Temporary files and folders are created with the modes a plain ``open``/``mkdir`` gives (0666/0777 less the
umask, applied by the kernel): the process umask is never read or changed, so threads creating files at the same
time get normal modes too.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import IO, Any, Iterator

NAME_MAX = 255  # bytes of one file name on Linux file systems


def _temporary_name(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden name beside ``path``: ``.NAME.<random><suffix>``, NAME cut so that it fits in
    :data:`NAME_MAX` bytes."""
    tail = f".{secrets.token_hex(8)}{suffix}"
    name = os.fsencode(path.name)[: NAME_MAX - 1 - len(tail)]
    return path.with_name(f".{os.fsdecode(name)}{tail}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty file beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; rename it onto ``path`` on success."""
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty folder beside ``path``; on success it replaces ``path`` (and all it held)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path, ".dir")
    tmp.mkdir()
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _require_regular(mode: int, path: str | os.PathLike) -> None:
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, "not a regular file (a FIFO, device, socket or folder)", os.fspath(path))


def read_regular(path: str | os.PathLike) -> bytes:
    """The bytes of the regular file ``path``. A FIFO, device or socket is an OSError and never blocks: it is refused
    by ``stat`` before opening, and the file is opened non-blocking and checked again (a swap in between)."""
    _require_regular(os.stat(path).st_mode, path)
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
        _require_regular(os.fstat(handle.fileno()).st_mode, path)
        return handle.read()


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 1) -> None:
    """Atomically write ``value`` as JSON (and a final newline) to ``path``."""
    with atomic_open(path) as handle:
        json.dump(value, handle, indent=indent)
        handle.write("\n")


def write_text_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Atomically write ``text`` unless the file already holds it (keeps its mtime). Returns True if written."""
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    with atomic_open(path) as handle:
        handle.write(text)
    return True


@contextlib.contextmanager
def png_figure(path: str | os.PathLike, figsize: tuple[float, float], ncols: int = 1) -> Iterator[tuple[Any, Any]]:
    """A headless matplotlib ``(figure, axes)`` of ``ncols`` axes, saved atomically to ``path`` as PNG on success."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, ncols, figsize=figsize)
    try:
        yield figure, axes
        figure.tight_layout()
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(figure)

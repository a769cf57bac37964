"""Shard lists: split pose files into K stable shards, one text file per shard (`shard-000.txt`, ...).

A file's shard depends only on its key (its name relative to the bucket prefix or the local folder), through a
stable hash, so adding or removing one file changes exactly one list. Lists hold one path per line, relative to
the list's folder (the format `sign_vq.normalize.read_file_list` reads), sorted, and are written only when their
text changes, so an unchanged list keeps its mtime and Snakemake does not rerun its shard.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Callable, Iterable

from sign_vq.errors import UserError
from sign_vq.fileio import write_text_if_changed

log = logging.getLogger(__name__)

LIST_PATTERN = re.compile(r"^shard-(\d{3,})\.txt$")
POSE_SUFFIX = ".pose"
SKIP_DIRS = {".sync-tmp"}  # the sync stage's temporary folder inside a mirror


def shard_of(name: str, num_shards: int) -> int:
    """The shard (0 ≤ shard < ``num_shards``) of the key ``name``: first 8 bytes of its blake2b hash, mod K."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards


def list_path(lists_dir: Path, shard: int) -> Path:
    """The list file of ``shard``: `shard-000.txt` (three digits at least)."""
    return Path(lists_dir) / f"shard-{shard:03d}.txt"


def relative_key(root: Path) -> Callable[[Path], str]:
    """A shard key: the file's path relative to ``root``, posix style."""
    root_text = os.path.abspath(root)
    prefix = root_text.rstrip("/") + "/"

    def key(path: Path) -> str:
        text = os.fspath(path)
        if text.startswith(prefix) and "/.." not in text:  # the common case, ~10x faster than relpath
            return text[len(prefix):]
        return Path(os.path.relpath(os.path.abspath(text), root_text)).as_posix()

    return key


def _relative_paths(files: Iterable[Path], start: Path) -> list[str]:
    """``files`` relative to ``start`` (no symlink resolution); one `relpath` per folder, not per file."""
    start_text = os.path.abspath(start)
    folders: dict[str, str] = {}
    result = []
    for path in files:
        folder, slash, base = os.fspath(path).rpartition("/")
        prefix = folders.get(folder)
        if prefix is None:
            parent = folder or ("/" if slash else ".")
            prefix = folders[folder] = Path(os.path.relpath(os.path.abspath(parent), start_text)).as_posix()
        result.append(base if prefix == "." else f"{prefix}/{base}")
    return result


def write_shard_lists(
    files: list[Path],
    lists_dir: Path,
    num_shards: int,
    key: Callable[[Path], str] | None = None,
) -> list[Path]:
    """Write all ``num_shards`` lists for ``files`` into ``lists_dir``; returns the list files that changed.

    ``key(path)`` gives the name hashed to pick the shard (default: the path as given, posix style); pass
    ``relative_key(root)`` to shard by the path relative to a folder. Empty shards get an empty list; list files
    numbered ``num_shards`` or above (left by a larger K) are removed. Safe to call concurrently with itself.
    """
    if num_shards < 1:
        raise UserError(f"--shards must be at least 1 (got {num_shards})")
    lists_dir = Path(lists_dir)
    lists_dir.mkdir(parents=True, exist_ok=True)
    key = key or (lambda path: Path(path).as_posix())
    relative = _relative_paths(files, lists_dir)
    shards: list[list[str]] = [[] for _ in range(num_shards)]
    for path, line in zip(files, relative):
        shards[shard_of(key(path), num_shards)].append(line)
    changed = []
    for shard, lines in enumerate(shards):
        lines.sort()
        path = list_path(lists_dir, shard)
        if write_text_if_changed(path, "".join(f"{line}\n" for line in lines)):
            changed.append(path)
    for stale in lists_dir.iterdir():
        match = LIST_PATTERN.match(stale.name)
        if match and int(match.group(1)) >= num_shards:
            log.info("removing %s (only %d shards now)", stale, num_shards)
            stale.unlink(missing_ok=True)
    log.debug("%d files in %d shards under %s; %d lists changed", len(files), num_shards, lists_dir, len(changed))
    return changed


def find_poses(root: Path) -> list[Path]:
    """Every `*.pose` file under ``root`` (recursively, sorted; symlinked folders are not followed)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: not a folder")
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        found.extend(os.path.join(folder, n) for n in names if n.endswith(POSE_SUFFIX))
    found.sort()
    return [Path(p) for p in found]


def write_local_shard_lists(root: Path, lists_dir: Path, num_shards: int) -> list[Path]:
    """Shard every `*.pose` under ``root`` by its path relative to ``root``; returns the lists that changed."""
    return write_shard_lists(find_poses(root), lists_dir, num_shards, key=relative_key(root))

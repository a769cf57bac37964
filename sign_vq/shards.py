"""Shard lists: split pose files into K stable shards, one text file per shard (`shard-000.txt`, ...).

A file's shard depends only on its key (its name relative to the bucket prefix or the local folder), through a
stable hash, so adding or removing one file changes exactly one list. Lists hold one path per line, relative to
the list's folder (`read_list` reads them), sorted, and are written only when their text changes, so an unchanged
list keeps its mtime and Snakemake does not rerun its shard.

`scan_poses` lists a local folder and skips, with the reason, what cannot be a pose file or a line of a list
(symlink loops, folders named `x.pose`, unreadable files, names with line breaks or bytes that are not UTF-8).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from sign_vq.errors import UserError
from sign_vq.fileio import write_text_if_changed

log = logging.getLogger(__name__)

LIST_PATTERN = re.compile(r"^shard-(\d{3,})\.txt$")
POSE_SUFFIX = ".pose"
SKIP_DIRS = {".sync-tmp"}  # the sync stage's temporary folder inside a mirror
# characters that end a line for `str.splitlines` (or are control characters): such a name cannot be a list line
LINE_BREAKING = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


@dataclass
class Listing:
    """The pose files found under a folder and what was skipped there: (path, reason) pairs."""

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def report(self) -> str:
        """The skipped files as TSV (`path<TAB>reason`, names escaped with `printable`), header first."""
        return "path\treason\n" + "".join(f"{printable(path)}\t{reason}\n" for path, reason in self.skipped)


def printable(name: str) -> str:
    """``name`` with control characters and bytes that are not UTF-8 escaped (`\\n`, `\\xff`), for reports."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode() for c in text)


def unlistable(name: str) -> str | None:
    """Why ``name`` cannot be one line of a UTF-8 list file, or None if it can."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid UTF-8"
    if LINE_BREAKING.search(name):
        return "the name holds a line break or control character"
    return None


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
    """``files`` relative to ``start`` (no symlink resolution; a line that would start with anything but `.` or `/`
    gets `./`, so `read_list` never takes it for a comment or strips its spaces); one `relpath` per folder."""
    start_text = os.path.abspath(start)
    folders: dict[str, str] = {}
    result = []
    for path in files:
        folder, slash, base = os.fspath(path).rpartition("/")
        prefix = folders.get(folder)
        if prefix is None:
            parent = folder or ("/" if slash else ".")
            prefix = folders[folder] = Path(os.path.relpath(os.path.abspath(parent), start_text)).as_posix()
        line = base if prefix == "." else f"{prefix}/{base}"
        result.append(line if line.startswith((".", "/")) else f"./{line}")
    return result


def shard_texts(
    files: list[Path],
    lists_dir: Path,
    num_shards: int,
    key: Callable[[Path], str] | None = None,
) -> list[str]:
    """The text of each of the ``num_shards`` lists for ``files`` (paths relative to ``lists_dir``, sorted).

    ``key(path)`` gives the name hashed to pick the shard (default: the path as given, posix style); pass
    ``relative_key(root)`` to shard by the path relative to a folder. Names that cannot be a line are left out
    (logged); `scan_poses` reports them with the reason.
    """
    if num_shards < 1:
        raise UserError(f"--shards must be at least 1 (got {num_shards})")
    key = key or (lambda path: Path(path).as_posix())
    shards: list[list[str]] = [[] for _ in range(num_shards)]
    for path, line in zip(files, _relative_paths(files, lists_dir)):
        reason = unlistable(line)
        if reason:
            log.warning("not listed: %s: %s", printable(line), reason)
            continue
        shards[shard_of(key(path), num_shards)].append(line)
    return ["".join(f"{line}\n" for line in sorted(lines)) for lines in shards]


def read_list(path: Path) -> list[Path]:
    """Paths listed one per line (blank lines and `#` comments ignored), relative to the list's folder."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise UserError(f"{path}: cannot read the file list ({reason})") from None
    files = [Path(line.strip()) for line in lines if line.strip() and not line.startswith("#")]
    return [f if f.is_absolute() else Path(path).parent / f for f in files]


def write_shard_lists(
    files: list[Path],
    lists_dir: Path,
    num_shards: int,
    key: Callable[[Path], str] | None = None,
) -> list[Path]:
    """Write all ``num_shards`` lists for ``files`` into ``lists_dir``; returns the list files that changed.

    ``key`` as for `shard_texts`. Empty shards get an empty list; list files numbered ``num_shards`` or above (left
    by a larger K) are removed. Safe to call concurrently with itself.
    """
    lists_dir = Path(lists_dir)
    texts = shard_texts(files, lists_dir, num_shards, key)
    lists_dir.mkdir(parents=True, exist_ok=True)
    changed = []
    for shard, text in enumerate(texts):
        path = list_path(lists_dir, shard)
        if write_text_if_changed(path, text):
            changed.append(path)
    for stale in lists_dir.iterdir():
        match = LIST_PATTERN.match(stale.name)
        if match and int(match.group(1)) >= num_shards:
            log.info("removing %s (only %d shards now)", stale, num_shards)
            stale.unlink(missing_ok=True)
    log.debug("%d files in %d shards under %s; %d lists changed", len(files), num_shards, lists_dir, len(changed))
    return changed


def _unusable(path: str) -> str | None:
    """Why the file ``path`` cannot be read as a pose (following symlinks), or None."""
    try:
        info = os.stat(path)
    except OSError as error:  # a symlink loop, a broken link, a name the system refuses
        return error.strerror or type(error).__name__
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    return unlistable(path)


def scan_poses(root: Path) -> Listing:
    """Every usable `*.pose` file under ``root`` (recursively, sorted; symlinked folders are not followed), and
    every `*.pose` entry skipped with its reason. Never fails for one bad entry; a missing ``root`` is an error."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: not a folder")
    listing = Listing()

    def unreadable_folder(error: OSError) -> None:
        listing.skipped.append((str(error.filename), f"cannot list the folder ({error.strerror})"))

    for folder, dirs, names in os.walk(root, onerror=unreadable_folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in dirs:
            if name.endswith(POSE_SUFFIX):
                listing.skipped.append((os.path.join(folder, name), "a folder, not a pose file"))
        for name in sorted(n for n in names if n.endswith(POSE_SUFFIX)):
            path = os.path.join(folder, name)
            reason = _unusable(path)
            if reason:
                listing.skipped.append((path, reason))
            else:
                listing.files.append(Path(path))
    listing.files.sort()
    listing.skipped.sort()
    return listing

"""Shard lists: split pose files into K stable shards, one text file per shard (`shard-000.txt`, ...).

A file's shard depends only on its key (its name relative to the bucket prefix or the local folder), through a
stable hash, so adding or removing one file changes exactly one list. Lists hold one path per line, relative to
the list's folder, followed by the file's fingerprint (`size<TAB>mtime_ns` locally, `size<TAB>crc32c<TAB>generation`
from a bucket), so a shard's list is its manifest: its text changes exactly when one of its files is added, removed
or rewritten (`list_entries` and `read_list` read it; a list written by hand may hold bare paths). Lists are sorted
and written only when their text changes, so an unchanged list keeps its mtime and Snakemake does not rerun its
shard.

`scan_poses` lists a local folder and skips, with the reason, what cannot be a pose file or a line of a list
(other files, symlink loops, folders named `x.pose`, unreadable files, names with line breaks or bytes that are not
UTF-8).
"""

from __future__ import annotations

import array
import hashlib
import itertools
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from sign_vq.errors import UserError
from sign_vq.fileio import write_text_if_changed

log = logging.getLogger(__name__)
LIST_PATTERN = re.compile(r"^shard-(\d{3,})\.txt$")
POSE_SUFFIX = ".pose"
NOT_POSE = "not a .pose file"
SKIP_DIRS = {".sync-tmp"}  # the sync stage's temporary folder inside a mirror
# characters that end a line for `str.splitlines` (or are control characters): such a name cannot be a list line
LINE_BREAKING = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


@dataclass
class Listing:
    """The pose files found under a folder (paths as text, with their sizes and mtimes in nanoseconds) and what was
    skipped there: (path, reason) pairs."""

    files: list[str] = field(default_factory=list)
    sizes: array.array = field(default_factory=lambda: array.array("q"))  # compact: 8 bytes a file
    mtimes: array.array = field(default_factory=lambda: array.array("q"))
    skipped: list[tuple[str, str]] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # files not named `*.pose` (reported, never read)

    def add(self, path: str, size: int, mtime_ns: int) -> None:
        self.files.append(path)
        self.sizes.append(size)
        self.mtimes.append(mtime_ns)

    def sort(self) -> None:
        """Files (with their sizes and mtimes) and skipped entries in path order."""
        order = sorted(range(len(self.files)), key=self.files.__getitem__)
        self.files = [self.files[i] for i in order]
        self.sizes = array.array("q", (self.sizes[i] for i in order))
        self.mtimes = array.array("q", (self.mtimes[i] for i in order))
        self.skipped.sort()
        self.others.sort()

    def fingerprints(self) -> Iterator[str]:
        """Each file's `size<TAB>mtime_ns`: its list line changes when the file is rewritten."""
        return (f"{size}\t{mtime}" for size, mtime in zip(self.sizes, self.mtimes))

    def report(self) -> str:
        """The skipped entries and the other files as TSV (`path<TAB>reason`, names escaped with `printable`),
        header first."""
        rows = [*self.skipped, *((path, NOT_POSE) for path in self.others)]
        return "path\treason\n" + "".join(f"{printable(path)}\t{reason}\n" for path, reason in rows)


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


def _relative_paths(files: Iterable[Path] | Iterable[str], start: Path) -> Iterator[str]:
    """``files`` relative to ``start`` (no symlink resolution; a line that would start with anything but `.` or `/`
    gets `./`, so `read_list` never takes it for a comment or strips its spaces); one `relpath` per folder."""
    start_text = os.path.abspath(start)
    folders: dict[str, str] = {}
    for path in files:
        folder, slash, base = os.fspath(path).rpartition("/")
        prefix = folders.get(folder)
        if prefix is None:
            parent = folder or ("/" if slash else ".")
            prefix = folders[folder] = Path(os.path.relpath(os.path.abspath(parent), start_text)).as_posix()
        line = base if prefix == "." else f"{prefix}/{base}"
        yield line if line.startswith((".", "/")) else f"./{line}"


def shard_texts(
    files: list[Path] | list[str],
    lists_dir: Path,
    num_shards: int,
    key: Callable[[Path], str] | None = None,
    fingerprints: Iterable[str] | None = None,
) -> list[str]:
    """The text of each of the ``num_shards`` lists for ``files`` (paths relative to ``lists_dir``, sorted).

    ``key(path)`` gives the name hashed to pick the shard (default: the path as given, posix style); pass
    ``relative_key(root)`` to shard by the path relative to a folder. ``fingerprints`` (one per file, e.g.
    `size<TAB>mtime_ns`, `size<TAB>crc32c<TAB>generation`; the size first) follow each path after a tab, so a list's
    text changes exactly when one of its files does. Names that cannot be a line are left out (logged);
    `scan_poses` reports them with the reason.
    """
    if num_shards < 1:
        raise UserError(f"--shards must be at least 1 (got {num_shards})")
    key = key or (lambda path: Path(path).as_posix())
    tails = ("\t" + f for f in fingerprints) if fingerprints is not None else itertools.repeat("")
    shards: list[list[str]] = [[] for _ in range(num_shards)]
    for path, line, tail in zip(files, _relative_paths(files, lists_dir), tails):
        reason = unlistable(line)
        if reason:
            log.warning("not listed: %s: %s", printable(line), reason)
            continue
        shards[shard_of(key(path), num_shards)].append(line + tail)
    texts = []
    for lines in shards:  # each shard's lines freed once joined
        lines.sort()
        texts.append("".join(f"{line}\n" for line in lines))
        lines.clear()
    return texts


@dataclass(frozen=True)
class ShardList:
    """A shard's list as the workflow sees it: its content-named file, whether it is empty, its largest file."""

    path: str
    empty: bool
    largest: int


def content_name(prefix: str, text: str, suffix: str) -> str:
    """`PREFIX-<hash of text>SUFFIX`: a new content is a new file, an unchanged one keeps its file and mtime."""
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:12]}{suffix}"


def stage_local_lists(
    root: Path, lists_dir: Path, num_shards: int, staging: Path
) -> tuple[dict[str, ShardList], Listing]:
    """List ``root`` once and name each shard's list by its content (`LISTS/shard-003-<hash>.txt`); the text of a
    list not yet in ``lists_dir`` is written into ``staging`` under the same name (atomically, once), for a local
    job to move into place. Returns shard name (`003`) -> its list, and the listing."""
    listing = scan_poses(root)
    texts = shard_texts(listing.files, lists_dir, num_shards, relative_key(root), listing.fingerprints())
    lists = {}
    for shard, text in enumerate(texts):
        name = f"{shard:03d}"
        path = content_name(os.path.join(lists_dir, f"shard-{name}"), text, ".txt")
        if not os.path.exists(path):
            stage_text(Path(staging) / os.path.basename(path), text)
        lists[name] = ShardList(path, not text, largest_size(text))
    return lists, listing


def stage_text(staged: Path, text: str) -> None:
    """Write ``text`` to ``staged`` (atomically) unless it is there: a content-named file waiting to be moved into
    place by a job."""
    if not staged.exists():
        staged.parent.mkdir(parents=True, exist_ok=True)
        write_text_if_changed(staged, text)


def largest_size(text: str) -> int:
    """The largest size a list's text records (0 if none: an empty list, or bare paths written by hand)."""
    sizes = (line.split("\t", 2)[1] for line in text.splitlines() if "\t" in line)
    return max((int(size) for size in sizes if size.isdigit()), default=0)


def list_entries(path: Path) -> list[tuple[Path, int | None]]:
    """Each (path, recorded size or None) of the list file ``path``: one path per line, optionally followed by
    tab-separated fingerprint fields, size first (blank lines and `#` comments ignored); relative paths are relative
    to the list's folder."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise UserError(f"{path}: cannot read the file list ({reason})") from None
    entries = []
    for line in text.splitlines():
        name, _, fields = line.partition("\t")
        name = name.strip()
        if name and not name.startswith("#"):
            size = fields.partition("\t")[0]
            file = Path(name) if name.startswith("/") else Path(path).parent / name
            entries.append((file, int(size) if size.isdigit() else None))
    return entries


def read_list(path: Path) -> list[Path]:
    """The paths of a list (see `list_entries`)."""
    return [file for file, _ in list_entries(path)]


def write_shard_lists(
    files: list[Path],
    lists_dir: Path,
    num_shards: int,
    key: Callable[[Path], str] | None = None,
    fingerprints: Iterable[str] | None = None,
) -> list[Path]:
    """Write all ``num_shards`` lists for ``files`` into ``lists_dir``; returns the list files that changed.

    ``key`` and ``fingerprints`` as for `shard_texts`. Empty shards get an empty list; list files numbered
    ``num_shards`` or above (left by a larger K) are removed. Safe to call concurrently with itself.
    """
    lists_dir = Path(lists_dir)
    texts = shard_texts(files, lists_dir, num_shards, key, fingerprints)
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


def _stat_usable(entry: os.DirEntry) -> os.stat_result | str:
    """The stat of the `*.pose` entry (following symlinks), or why it cannot be read as a pose."""
    try:
        info = entry.stat()
    except OSError as error:  # a symlink loop, a broken link, a name the system refuses
        return error.strerror or type(error).__name__
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if not info.st_mode & stat.S_IROTH and not os.access(entry.path, os.R_OK):  # asked only when not world-readable
        return "not readable (permission denied)"
    return unlistable(entry.path) or info


def scan_poses(root: Path) -> Listing:
    """Every usable `*.pose` file under ``root`` (recursively, sorted; symlinked folders are not followed) with its
    size and mtime, every `*.pose` entry skipped with its reason, and the other files. One `os.scandir` walk and one
    stat per pose file. Never fails for one bad entry; a missing ``root`` is an error."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: not a folder")
    listing = Listing()
    pending = [os.fspath(root)]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                entries = list(entries)
        except OSError as error:
            listing.skipped.append((folder, f"cannot list the folder ({error.strerror})"))
            continue
        for entry in entries:
            _scan_entry(entry, listing, pending)
    listing.sort()
    return listing


def _scan_entry(entry: os.DirEntry, listing: Listing, pending: list[str]) -> None:
    """Add one folder entry to the walk (``pending``), the files or the skipped entries of ``listing``."""
    try:
        is_folder = entry.is_dir(follow_symlinks=False)
    except OSError:
        is_folder = False
    if is_folder:
        if entry.name not in SKIP_DIRS:
            pending.append(entry.path)
        if entry.name.endswith(POSE_SUFFIX):
            listing.skipped.append((entry.path, "a folder, not a pose file"))
    elif not entry.name.endswith(POSE_SUFFIX):
        listing.others.append(entry.path)
    else:
        info = _stat_usable(entry)
        if isinstance(info, str):
            listing.skipped.append((entry.path, info))
        else:
            listing.add(entry.path, info.st_size, info.st_mtime_ns)

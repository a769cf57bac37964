"""What a sync run fetches: the bucket listing read (names that could escape the mirror or clash refused) and
compared with the manifests and the files on disk (pure)."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Callable, Iterable

from sign_vq.mirror.manifest import MANIFEST, REMOVED, Entry

TMP_DIR = ".sync-tmp"
LOCK = ".sync.lock"
RESERVED_TOP = {MANIFEST, REMOVED, TMP_DIR, LOCK}


def refusal(name: str) -> str | None:
    """Why the relative object ``name`` cannot be a file inside the mirror, or None when it can."""
    if not name:
        return "empty name"
    if "\0" in name:
        return "contains a NUL character"
    if "\\" in name:
        return "contains a backslash"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a control character (tab, newline, ...)"
    if name.startswith("/"):
        return "absolute path"
    parts = name.split("/")
    if "" in parts:
        return "empty path component ('//' or trailing '/')"
    if "." in parts or ".." in parts:
        return "'.' or '..' path component"
    if any(len(part.encode("utf-8")) > 255 for part in parts):
        return "path component longer than 255 bytes"
    if parts[0] in RESERVED_TOP or (len(parts) == 1 and parts[0].startswith((f".{MANIFEST}.", f".{REMOVED}."))):
        return f"reserved by the sync stage ({parts[0]})"
    return None


def folder_clashes(names: list[str]) -> set[str]:
    """The names that are also a folder of another name (`clash` beside `clash/child.pose`)."""
    folders: set[str] = set()
    for name in names:
        end = name.rfind("/")
        while end > 0:
            folder = name[:end]
            if folder in folders:
                break
            folders.add(folder)
            end = name.rfind("/", 0, end)
    return folders.intersection(names)


@dataclasses.dataclass
class Listing:
    """The objects under ``prefix`` that the mirror can hold (``remote``, by relative name) and those it refuses."""

    prefix: str
    remote: dict[str, Entry] = dataclasses.field(default_factory=dict)
    refused: dict[str, str] = dataclasses.field(default_factory=dict)  # full object name -> reason
    listed: int = 0
    placeholders: int = 0  # zero-byte "folder/" objects made by the console: nothing to mirror

    def refused_names(self) -> set[str]:
        """The refused objects' names relative to the prefix."""
        return {name[len(self.prefix):] for name in self.refused}


def read_listing(objects: Iterable[tuple[str, int, str | None, int]], prefix: str) -> Listing:
    """Sort the listed ``(full name, size, crc32c, generation)`` into mirrorable, refused and folder placeholders."""
    listing = Listing(prefix)
    for name, size, crc, generation in objects:
        listing.listed += 1
        rel = name[len(prefix):]
        if rel.endswith("/") and size == 0 and refusal(rel.rstrip("/")) is None:
            listing.placeholders += 1
            continue
        reason = refusal(rel) or (None if crc else "no crc32c in the listing: cannot be verified")
        if reason:
            listing.refused[name] = reason
        else:
            listing.remote[rel] = Entry(rel, size, crc, generation)
    for rel in folder_clashes(list(listing.remote)):
        listing.refused[prefix + rel] = "clashes with the folder of another object"
        del listing.remote[rel]
    return listing


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run does: ``todo`` is checked or downloaded; ``current`` is what the mirror holds verified now."""

    current: dict[str, Entry]  # bucket names whose last verified content is known (the manifest if nothing changes)
    todo: list[Entry]  # sorted by name
    removed: dict[str, Entry]  # names of earlier manifests gone from the bucket -> their last verified entry


def plan(listing: Listing, old: dict[str, Entry], kept: dict[str, Entry], local_size: Callable[[str], int | None],
         verify: bool = False) -> Plan:
    """Compare the listing with the manifests (``old``: mirrored, ``kept``: removed in the bucket but kept).

    An object is up to date when a manifest has its size and crc32c and ``local_size(name)`` (the size of the
    regular file in the mirror, None when there is none) matches; ``verify`` re-checks every object.
    """
    current: dict[str, Entry] = {}
    todo: list[Entry] = []
    for rel, entry in listing.remote.items():
        previous = old.get(rel) or kept.get(rel)
        if previous is not None:
            current[rel] = previous
        if not verify and entry.same_content(previous) and local_size(rel) == entry.size:
            current[rel] = entry
        else:
            todo.append(entry)
    gone = (set(old) | set(kept)) - set(listing.remote) - listing.refused_names()
    removed = {rel: old.get(rel) or kept[rel] for rel in sorted(gone)}
    return Plan(current, sorted(todo, key=lambda e: e.name), removed)


def regular_size(path: Path) -> int | None:
    """The size of ``path`` when it is a regular file (not followed if a link), else None."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None

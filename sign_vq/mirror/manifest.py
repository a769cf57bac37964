"""The mirror's manifest (`manifest.tsv`, `removed.tsv`): every verified file with its size, crc32c and
generation."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import google_crc32c

from sign_vq.errors import UserError
from sign_vq.fileio import atomic_open

MANIFEST = "manifest.tsv"
REMOVED = "removed.tsv"
MANIFEST_COLUMNS = ("name", "size", "crc32c", "generation")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One object: ``name`` relative to the bucket prefix (= its path in the mirror), crc32c in base64."""

    name: str
    size: int
    crc32c: str
    generation: int

    def same_content(self, other: "Entry | None") -> bool:
        return other is not None and self.size == other.size and self.crc32c == other.crc32c


def read_manifest(path: Path) -> dict[str, Entry]:
    """Entries of a manifest TSV (missing file: empty)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    entries = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        try:
            name, size, crc, generation = fields
            entries[name] = Entry(name, int(size), crc, int(generation))
        except ValueError:
            raise UserError(f"{path}:{number}: malformed manifest line (delete the file to re-verify)") from None
    return entries


def write_manifest(path: Path, entries: dict[str, Entry]) -> None:
    """Atomically write ``entries`` sorted by name; an empty `removed.tsv` is deleted instead."""
    if not entries and path.name == REMOVED:
        path.unlink(missing_ok=True)
        return
    rows = ["\t".join(MANIFEST_COLUMNS)]
    rows += [f"{e.name}\t{e.size}\t{e.crc32c}\t{e.generation}" for _, e in sorted(entries.items())]
    with atomic_open(path) as handle:
        handle.write("\n".join(rows) + "\n")


def file_crc32c(path: Path) -> str:
    """The base64 crc32c of a file, as GCS reports it."""
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode("ascii")

"""One table (file, stage, reason) of every input the pipeline left out: the listing's skipped entries and the
files each normalize shard rejected."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from sign_vq.errors import UserError
from sign_vq.fileio import atomic_open
from sign_vq.formats.shards import printable

log = logging.getLogger(__name__)
HEADER = ("file", "stage", "reason")


def listing_rows(skipped: Path) -> Iterator[tuple[str, str, str]]:
    """The rows of the listing's report of skipped entries (`path<TAB>reason`, a header first)."""
    try:
        lines = skipped.read_text(encoding="utf-8").splitlines()[1:]
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{skipped}: cannot read the report of skipped entries ({error})") from None
    for line in lines:
        path, _, reason = line.partition("\t")
        yield os.path.normpath(path), "listing", reason


def shard_rows(report: Path) -> Iterator[tuple[str, str, str]]:
    """The files a normalize shard rejected, from its report (`SHARD.report.json`)."""
    try:
        bad = json.loads(report.read_text(encoding="utf-8"))["bad_files"]
        rows = [(str(entry["file"]), str(entry["reason"])) for entry in bad]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{report}: not a normalize shard report ({error}); rerun that shard's normalize") from None
    for file, reason in rows:
        yield printable(os.path.normpath(file)), "normalize", printable(reason)


def write_rejected(output: Path, skipped: Path | None, reports: list[Path]) -> int:
    """Write the merged table to ``output`` (atomically); returns its number of rows."""
    rows = [*(listing_rows(skipped) if skipped else ()), *(row for report in reports for row in shard_rows(report))]
    with atomic_open(output) as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(HEADER)
        writer.writerows(rows)
    log.info("%s: %d files rejected or skipped", output, len(rows))
    return len(rows)

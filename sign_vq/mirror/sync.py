"""One sync run: list the bucket (:func:`~.plan.read_listing`) -> compare it with the manifests
(:func:`~.plan.plan`) -> the download pool (:func:`~.download.download`) -> objects removed from the bucket ->
shard lists -> a :class:`Summary` that writes and logs itself."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import google_crc32c

from sign_vq.config import default
from sign_vq.errors import UserError
from sign_vq.fileio import write_json
from sign_vq.formats import shards
from sign_vq.mirror.download import Downloads, Syncer, download, handle_removed
from sign_vq.mirror.gcs import list_bucket, make_client, parse_bucket_url
from sign_vq.mirror.manifest import MANIFEST, REMOVED, read_manifest, write_manifest
from sign_vq.mirror.plan import LOCK, TMP_DIR, Listing, plan, read_listing, regular_size

log = logging.getLogger(__name__)
SUMMARY = "sync-summary.json"
LOG_AT_MOST = 20  # refused or failed objects named in the log (the summary lists all)


@contextlib.contextmanager
def _locked(mirror: Path) -> Iterator[None]:
    """Hold an exclusive lock on the mirror: two syncs into one folder would clobber each other's temp files."""
    with open(mirror / LOCK, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{mirror}: another sync is running on this mirror") from None
        yield


def _clean_stale(mirror: Path, lists_dir: Path) -> int:
    """Remove temp files left by a killed run (downloads and atomic writes); returns how many."""
    count = 0
    tmp = mirror / TMP_DIR
    if tmp.exists():
        count += sum(1 for p in tmp.rglob("*") if p.is_file())
        shutil.rmtree(tmp)
    for folder, patterns in ((mirror, (f".{MANIFEST}.*.tmp", f".{REMOVED}.*.tmp")),
                             (lists_dir, (".shard-*.txt.*.tmp", f".{SUMMARY}.*.tmp"))):
        for pattern in patterns:
            for path in folder.glob(pattern):
                path.unlink(missing_ok=True)
                count += 1
    if count:
        log.info("removed %d stale temporary files from an interrupted run", count)
    return count


def _log_first(level: int, lines: list[str], what: str, where: Path) -> None:
    """Log the first :data:`LOG_AT_MOST` of ``lines``, then how many more there are (all of them are in ``where``)."""
    for line in lines[:LOG_AT_MOST]:
        log.log(level, "%s", line)
    if len(lines) > LOG_AT_MOST:
        log.log(level, "... and %d more %s (all in %s)", len(lines) - LOG_AT_MOST, what, where)


@dataclasses.dataclass
class Summary:
    """One run's report: written to ``LISTS/sync-summary.json`` and logged."""

    source: str
    mirror: Path
    shards: int
    threads: int
    listing: Listing
    downloads: Downloads
    skipped: int  # up to date by the manifest
    mirrored: int
    removed: list[str]
    kept_removed: int
    stale_temp_removed: int
    lists_changed: list[str]
    seconds: float

    @property
    def failed_count(self) -> int:
        return len(self.downloads.failed)

    def as_dict(self) -> dict:
        """The JSON content (its keys are the stage's documented interface)."""
        listing, downloads, prefix = self.listing, self.downloads, self.listing.prefix
        return {
            "source": self.source,
            "mirror": str(self.mirror),
            "shards": self.shards,
            "threads": self.threads,
            "listed": listing.listed,
            "mirrored": self.mirrored,
            "downloaded": downloads.downloaded,
            "skipped": self.skipped + downloads.verified,
            "verified_local": downloads.verified,
            "refused_count": len(listing.refused),
            "refused": [{"name": n, "reason": r} for n, r in sorted(listing.refused.items())],
            "folder_placeholders": listing.placeholders,
            "removed_in_bucket": self.removed,
            "deleted": len(self.removed) - self.kept_removed,
            "kept_removed": self.kept_removed,
            "failed_count": self.failed_count,
            "failed": [{"name": prefix + n, "error": e} for n, e in sorted(downloads.failed.items())],
            "not_attempted": downloads.not_attempted,
            "bytes": downloads.bytes,
            "seconds": round(self.seconds, 3),
            "stale_temp_removed": self.stale_temp_removed,
            "lists_changed": self.lists_changed,
        }

    def write(self, path: Path) -> None:
        write_json(path, self.as_dict())

    def log(self, path: Path) -> None:
        """One line of figures, then the first refused and failed objects (all of them are in ``path``)."""
        data = self.as_dict()
        log.info(
            "sync %s: %d listed, %d downloaded (%.1f MB), %d skipped, %d refused, %d removed in bucket (%d deleted), "
            "%d failed, %d/%d shard lists changed, %.1f s",
            self.source, data["listed"], data["downloaded"], data["bytes"] / 1e6, data["skipped"],
            data["refused_count"], len(self.removed), data["deleted"], data["failed_count"],
            len(self.lists_changed), self.shards, self.seconds,
        )
        _log_first(logging.WARNING, [f"refused object {r['name']!r}: {r['reason']}" for r in data["refused"]],
                   "refused objects", path)
        _log_first(logging.ERROR, [f"failed: {f['name']}: {f['error']}" for f in data["failed"]], "failures", path)


def sync_bucket(
    url: str,
    mirror: Path,
    lists_dir: Path,
    num_shards: int,
    *,
    threads: int = default("input.threads"),
    delete_removed: bool = default("input.delete_removed"),
    anonymous: bool = False,
    retries: int = 5,
    retry_wait: float = 0.5,
    timeout: float = 120.0,
    verify: bool = False,
    client_factory: Callable[[], Any] | None = None,
) -> Summary:
    """Mirror ``url`` into ``mirror`` and write the shard lists; returns the summary (also written as JSON)."""
    started = time.monotonic()
    if num_shards < 1 or threads < 1 or retries < 0:
        raise UserError("--shards and --threads must be at least 1, --retries at least 0")
    bucket, prefix = parse_bucket_url(url)
    if google_crc32c.implementation != "c":
        log.warning("google_crc32c runs without its C extension: checksums will be slow")
    mirror, lists_dir = Path(mirror), Path(lists_dir)
    mirror.mkdir(parents=True, exist_ok=True)
    lists_dir.mkdir(parents=True, exist_ok=True)
    client_factory = client_factory or (lambda: make_client(anonymous))
    with _locked(mirror):
        stale = _clean_stale(mirror, lists_dir)
        objects = list_bucket(client_factory(), bucket, prefix, timeout=timeout, retries=retries,
                              retry_wait=retry_wait)
        listing = read_listing(objects, prefix)
        old, kept = read_manifest(mirror / MANIFEST), read_manifest(mirror / REMOVED)
        work = plan(listing, old, kept, lambda rel: regular_size(mirror / rel), verify)
        log.info("gs://%s/%s: %d objects listed, %d up to date, %d to check or download with %d threads",
                 bucket, prefix, listing.listed, len(listing.remote) - len(work.todo), len(work.todo), threads)
        syncer = Syncer(client_factory, bucket, prefix, mirror, retries=retries, retry_wait=retry_wait,
                        timeout=timeout)
        current = dict(work.current)
        downloads = download(work.todo, syncer.sync_one, current, threads,
                             lambda: write_manifest(mirror / MANIFEST, current))
        still_kept = handle_removed(work.removed, syncer, delete_removed)
        write_manifest(mirror / REMOVED, still_kept)
        pose_names = [rel for rel in sorted(current) if rel.endswith(shards.POSE_SUFFIX)]
        keys = {mirror / rel: rel for rel in pose_names}
        fingerprints = [f"{e.size}\t{e.crc32c}\t{e.generation}" for e in map(current.__getitem__, pose_names)]
        changed = shards.write_shard_lists(list(keys), lists_dir, num_shards, key=keys.__getitem__,
                                           fingerprints=fingerprints)
        summary = Summary(
            f"gs://{bucket}/{prefix}", mirror, num_shards, threads, listing, downloads,
            skipped=len(listing.remote) - len(work.todo), mirrored=len(current), removed=list(work.removed),
            kept_removed=len(still_kept), stale_temp_removed=stale, lists_changed=[p.name for p in changed],
            seconds=time.monotonic() - started,
        )
        summary.write(lists_dir / SUMMARY)
    summary.log(lists_dir / SUMMARY)
    return summary

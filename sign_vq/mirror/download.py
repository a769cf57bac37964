"""The download pool: each object fetched into the mirror's temporary folder, its crc32c verified, then renamed
into place; objects removed from the bucket kept or deleted."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import logging
import os
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from sign_vq.mirror.gcs import ChecksumMismatch, retryable_errors
from sign_vq.mirror.manifest import Entry, file_crc32c
from sign_vq.mirror.plan import TMP_DIR, refusal, regular_size

log = logging.getLogger(__name__)
CHECKPOINT_SECONDS = 60.0  # the manifest is saved this often during downloads


class Kind(enum.Enum):
    """What a worker did with one object."""

    DOWNLOADED = "downloaded"
    VERIFIED = "verified"  # the local file already had the listed crc32c
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One object's result (``size``: bytes downloaded; ``error``: why it failed)."""

    kind: Kind
    entry: Entry
    size: int = 0
    error: str = ""


class Syncer:
    """Download plan and workers for one sync run (one storage client per thread)."""

    def __init__(self, client_factory, bucket: str, prefix: str, mirror: Path, *, retries: int,
                 retry_wait: float, timeout: float) -> None:
        self.client_factory = client_factory
        self.bucket, self.prefix = bucket, prefix
        self.mirror = mirror
        self.root = mirror.resolve()
        self.tmp = mirror / TMP_DIR
        self.retries, self.retry_wait, self.timeout = retries, retry_wait, timeout
        self.retryable = retryable_errors()
        self._local = threading.local()

    def client(self):
        if not hasattr(self._local, "client"):
            self._local.client = self.client_factory()
        return self._local.client

    def destination(self, name: str) -> Path:
        """The path of ``name`` in the mirror; its existing parent must resolve inside the mirror (no symlink escape)."""
        path = self.mirror / name
        parent = path.parent
        while not parent.exists() and parent != self.mirror:
            parent = parent.parent
        resolved = parent.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise OSError(f"{parent} leads outside the mirror (symlink?)")
        return path

    def sync_one(self, entry: Entry) -> Outcome:
        """Make the mirror hold ``entry`` verified: check a same-size local file, else download with retries."""
        try:
            dest = self.destination(entry.name)
            if regular_size(dest) == entry.size and file_crc32c(dest) == entry.crc32c:
                return Outcome(Kind.VERIFIED, entry)
        except OSError as error:
            return Outcome(Kind.FAILED, entry, error=f"local file: {error}")
        tmp = self.tmp / (hashlib.blake2b(entry.name.encode("utf-8"), digest_size=16).hexdigest() + ".part")
        error: BaseException | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(30.0, self.retry_wait * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5))
            try:
                self._fetch(entry, tmp)
                size, crc = tmp.stat().st_size, file_crc32c(tmp)
                if size != entry.size or crc != entry.crc32c:
                    tmp.unlink()
                    raise ChecksumMismatch(
                        f"downloaded {size} bytes with crc32c {crc}, listed {entry.size} bytes with crc32c {entry.crc32c}"
                    )
                self._place(tmp, dest)
                return Outcome(Kind.DOWNLOADED, entry, size)
            except self.retryable as caught:
                error = caught
                log.debug("%s: attempt %d failed: %s", entry.name, attempt + 1, caught)
            except Exception as caught:  # not found, forbidden, local disk errors: retrying will not help
                error = caught
                break
        tmp.unlink(missing_ok=True)
        return Outcome(Kind.FAILED, entry, error=f"{type(error).__name__}: {error}".splitlines()[0][:300])

    def _fetch(self, entry: Entry, tmp: Path) -> None:
        """Download the listed generation into ``tmp``, resuming after the bytes a failed attempt left there."""
        offset = tmp.stat().st_size if tmp.exists() else 0
        if offset > entry.size:
            tmp.unlink()
            offset = 0
        if offset and offset == entry.size:
            return
        tmp.parent.mkdir(parents=True, exist_ok=True)
        blob = self.client().bucket(self.bucket).blob(self.prefix + entry.name, generation=entry.generation)
        with open(tmp, "ab") as handle:
            blob.download_to_file(handle, start=offset or None, raw_download=True, checksum=None, retry=None,
                                  timeout=self.timeout)

    def _place(self, tmp: Path, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.destination(dest.relative_to(self.mirror).as_posix())  # re-check now that the folders exist
        if dest.is_symlink() or dest.is_dir():
            raise OSError(f"{dest} exists and is not a regular file")
        os.replace(tmp, dest)


def _prune_empty_parents(path: Path, mirror: Path) -> None:
    parent = path.parent
    while parent != mirror and mirror in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent


@dataclasses.dataclass
class Downloads:
    """What the download pool did."""

    downloaded: int = 0
    verified: int = 0  # local files that already had the listed crc32c
    bytes: int = 0
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # relative name -> error
    not_attempted: int = 0  # left after too many consecutive failures

    def add(self, outcome: Outcome) -> None:
        if outcome.kind is Kind.FAILED:
            self.failed[outcome.entry.name] = outcome.error
        elif outcome.kind is Kind.DOWNLOADED:
            self.downloaded += 1
            self.bytes += outcome.size
        else:
            self.verified += 1


def stop_after(threads: int) -> int:
    """Consecutive failures after which the service is taken as unreachable and the rest is not attempted."""
    return max(20, 4 * threads)


def download(todo: list[Entry], sync_one: Callable[[Entry], Outcome], current: dict[str, Entry], threads: int,
             save: Callable[[], None]) -> Downloads:
    """Run ``sync_one`` on ``todo`` in ``threads`` threads, updating ``current`` (a failure drops the name).

    ``save`` (write the manifest of ``current``) runs every :data:`CHECKPOINT_SECONDS` and at the end, also after
    an interrupt. Stops submitting after :func:`stop_after` consecutive failures.
    """
    result = Downloads()
    limit, streak = stop_after(threads), 0
    queue = iter(todo)
    last_save = time.monotonic()
    with ThreadPoolExecutor(threads, thread_name_prefix="sync") as pool, \
            tqdm(total=len(todo), desc="sync", unit="file", disable=None) as bar:
        pending: set[Future] = set()
        try:
            while True:
                while len(pending) < 4 * threads and streak < limit and (entry := next(queue, None)) is not None:
                    pending.add(pool.submit(sync_one, entry))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    outcome = future.result()
                    result.add(outcome)
                    if outcome.kind is Kind.FAILED:
                        current.pop(outcome.entry.name, None)
                        streak += 1
                    else:
                        current[outcome.entry.name] = outcome.entry
                        streak = 0
                bar.update(len(done))
                bar.set_postfix(MB=f"{result.bytes / 1e6:.1f}", failed=len(result.failed), refresh=False)
                if time.monotonic() - last_save > CHECKPOINT_SECONDS:
                    save()  # a kill now loses no verified download
                    last_save = time.monotonic()
        finally:
            for future in pending:
                future.cancel()
            save()
    for entry in queue:
        result.failed[entry.name] = "not attempted: too many consecutive failures"
        result.not_attempted += 1
    if result.not_attempted:
        log.error("stopped after %d consecutive failures (service unreachable?): %d objects not attempted",
                  limit, result.not_attempted)
    return result


def handle_removed(removed: dict[str, Entry], syncer: "Syncer", delete: bool) -> dict[str, Entry]:
    """Delete the mirrored files of objects removed from the bucket (``delete``), or keep them; returns the kept."""
    kept = dict(removed)
    for rel in removed if delete else ():
        path = syncer.mirror / rel
        try:
            if refusal(rel) is None and os.path.lexists(path):
                if path.is_symlink() or not path.is_file():
                    raise OSError("not a regular file")
                syncer.destination(rel)
                path.unlink()
                _prune_empty_parents(path, syncer.mirror)
            del kept[rel]
        except OSError as error:
            log.warning("cannot delete %s: %s", path, error)
    for rel in removed:
        log.info("removed in the bucket: %s (%s)", rel, "kept" if rel in kept else "deleted")
    return kept

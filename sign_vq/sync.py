"""Sync stage: mirror a GCS bucket and write the shard lists.

`sign-vq sync --bucket gs://BUCKET[/PREFIX] --output MIRROR --lists LISTS --shards K` lists the bucket once,
downloads only new or changed objects (size and crc32c against `MIRROR/manifest.tsv` and the file on disk) in
parallel threads, each into `MIRROR/.sync-tmp/`, verifies its crc32c (computed here with `google_crc32c`) and
renames it into place. `manifest.tsv` lists every verified file of the mirror that is in the bucket; objects
removed from the bucket are kept (listed in `removed.tsv`) or deleted with `--delete-removed`. Names that could
escape the mirror or clash with another object are refused and reported. `LISTS/shard-NNN.txt` list the
mirrored `.pose` files by a stable hash of their name, and `LISTS/sync-summary.json` reports the run.

One run: list the bucket (:func:`read_listing`) → compare it with the manifests (:func:`plan`, pure) → the
download pool (:func:`download`) → objects removed from the bucket (:func:`handle_removed`) → shard lists → a
:class:`Summary` that writes and logs itself. (A local folder needs no sync: the workflow lists it itself.)

Exit status: 0 when every object is mirrored, 1 when downloads still fail after the retries (everything else is
written first, and the failed names are logged and in the summary), 2 for usage, credential or bucket errors.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import enum
import fcntl
import hashlib
import logging
import os
import random
import shutil
import stat
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import google_crc32c
from tqdm import tqdm

from sign_vq import shards
from sign_vq.errors import UserError
from sign_vq.fileio import atomic_open, write_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.tsv"
REMOVED = "removed.tsv"
TMP_DIR = ".sync-tmp"
LOCK = ".sync.lock"
SUMMARY = "sync-summary.json"
MANIFEST_COLUMNS = ("name", "size", "crc32c", "generation")
RESERVED_TOP = {MANIFEST, REMOVED, TMP_DIR, LOCK}
CHECKPOINT_SECONDS = 60.0  # the manifest is saved this often during downloads
LOG_AT_MOST = 20  # refused or failed objects named in the log (the summary lists all)
LIST_FIELDS = "items(name,size,crc32c,generation),nextPageToken"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One object: ``name`` relative to the bucket prefix (= its path in the mirror), crc32c in base64."""

    name: str
    size: int
    crc32c: str
    generation: int

    def same_content(self, other: "Entry | None") -> bool:
        return other is not None and self.size == other.size and self.crc32c == other.crc32c


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


class ChecksumMismatch(Exception):
    """The downloaded bytes do not have the listed size or crc32c."""


# ----------------------------------------------------------------------------------------------- names


def parse_bucket_url(url: str) -> tuple[str, str]:
    """`gs://bucket/some/prefix` -> ("bucket", "some/prefix/"); the prefix is empty or ends with "/"."""
    if not url.startswith("gs://"):
        raise UserError(f"--bucket {url!r}: expected gs://BUCKET[/PREFIX]")
    bucket, _, prefix = url[len("gs://"):].partition("/")
    if not bucket or any(c in bucket for c in " \\\0") or bucket in {".", ".."}:
        raise UserError(f"--bucket {url!r}: bad bucket name {bucket!r}")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


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


# ------------------------------------------------------------------------------------------- manifest


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


# --------------------------------------------------------------------------------------------- client


def make_client(anonymous: bool = False):
    """A storage client: Application Default Credentials, else anonymous (public buckets, emulators)."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    if anonymous:
        return storage.Client.create_anonymous_client()
    try:
        # project is not needed to read; None skips the lookup that fails for credentials without a project
        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
    except DefaultCredentialsError:
        log.info("no Google credentials found: using an anonymous client (public buckets only)")
        return storage.Client.create_anonymous_client()


def _retryable_errors() -> tuple[type[BaseException], ...]:
    import requests
    import urllib3
    from google.api_core import exceptions as api
    from google.resumable_media import common

    return (
        ChecksumMismatch, ConnectionError, TimeoutError, requests.RequestException, urllib3.exceptions.HTTPError,
        api.ServerError, api.TooManyRequests, api.RequestRangeNotSatisfiable, common.InvalidResponse,
        common.DataCorruption,
    )


# ----------------------------------------------------------------------------------------------- sync


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
        self.retryable = _retryable_errors()
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


def bounded_retry(timeout: float, retries: int, retry_wait: float):
    """The client library's retry bounded by the run's flags: ``retries`` more attempts of ``timeout`` seconds
    each, the first wait ``retry_wait`` (the library's own default retries for 120 s whatever the flags say)."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(initial=retry_wait, maximum=30.0).with_timeout(
        (retries + 1) * (timeout + retry_wait)
    )


def list_bucket(client, bucket: str, prefix: str, *, timeout: float = 120.0, retries: int = 5,
                retry_wait: float = 0.5) -> Iterator[tuple[str, int, str | None, int]]:
    """(full name, size, crc32c, generation) of every object under ``prefix``: one paginated listing, each page
    request bounded by ``timeout`` and :func:`bounded_retry`."""
    from google.api_core import exceptions as api
    from google.auth.exceptions import GoogleAuthError

    url = f"gs://{bucket}/{prefix}"
    pages = client.list_blobs(bucket, prefix=prefix, fields=LIST_FIELDS, timeout=timeout,
                              retry=bounded_retry(timeout, retries, retry_wait))
    try:
        for blob in tqdm(pages, desc="list", unit="obj", disable=None):
            yield blob.name, int(blob.size or 0), blob.crc32c, int(blob.generation or 0)
    except api.NotFound:
        raise UserError(f"{url}: bucket not found") from None
    except (api.Forbidden, api.Unauthorized) as error:
        raise UserError(f"{url}: access denied ({error.message}); check the credentials "
                        "(gcloud auth application-default login) or use --anonymous for a public bucket") from None
    except api.RetryError as error:
        raise UserError(f"{url}: no answer within --timeout {timeout:g} s and --retries {retries} "
                        f"({str(error.cause).splitlines()[0]}); check the network or raise the flags") from None
    except (api.GoogleAPIError, GoogleAuthError) as error:
        raise UserError(f"{url}: cannot list the bucket: {error}") from None
    except OSError as error:
        raise UserError(f"{url}: cannot reach the storage service: {error}") from None


def _prune_empty_parents(path: Path, mirror: Path) -> None:
    parent = path.parent
    while parent != mirror and mirror in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent


def _log_first(level: int, lines: list[str], what: str, where: Path) -> None:
    """Log the first :data:`LOG_AT_MOST` of ``lines``, then how many more there are (all of them are in ``where``)."""
    for line in lines[:LOG_AT_MOST]:
        log.log(level, "%s", line)
    if len(lines) > LOG_AT_MOST:
        log.log(level, "... and %d more %s (all in %s)", len(lines) - LOG_AT_MOST, what, where)


# ------------------------------------------------------------------------------------------ listing and plan


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


# ------------------------------------------------------------------------------------------------ downloads


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


# ------------------------------------------------------------------------------------------------- removals


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


# -------------------------------------------------------------------------------------------------- summary


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


# ----------------------------------------------------------------------------------------------------- sync


def sync_bucket(
    url: str,
    mirror: Path,
    lists_dir: Path,
    num_shards: int,
    *,
    threads: int = 8,
    delete_removed: bool = False,
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


# ------------------------------------------------------------------------------------------------ CLI


def run(args: argparse.Namespace) -> int:
    summary = sync_bucket(
        args.bucket, args.output, args.lists, args.shards, threads=args.threads,
        delete_removed=args.delete_removed, anonymous=args.anonymous, retries=args.retries,
        retry_wait=args.retry_wait, timeout=args.timeout, verify=args.verify,
    )
    return 1 if summary.failed_count else 0


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("sync")

"""Sync stage: mirror a GCS bucket (or list a local folder) and write the shard lists.

`sign-vq sync --bucket gs://BUCKET[/PREFIX] --output MIRROR --lists LISTS --shards K` lists the bucket once,
downloads only new or changed objects (size and crc32c against `MIRROR/manifest.tsv` and the file on disk) in
parallel threads, each into `MIRROR/.sync-tmp/`, verifies its crc32c (computed here with `google_crc32c`) and
renames it into place. `manifest.tsv` lists every verified file of the mirror that is in the bucket; objects
removed from the bucket are kept (listed in `removed.tsv`) or deleted with `--delete-removed`. Names that could
escape the mirror or clash with another object are refused and reported. `LISTS/shard-NNN.txt` list the
mirrored `.pose` files by a stable hash of their name, and `LISTS/sync-summary.json` reports the run.

`sign-vq sync --local DIR --lists LISTS --shards K` only lists `**/*.pose` under DIR into the same shard lists.

Exit status: 0 when every object is mirrored, 1 when downloads still fail after the retries (everything else is
written first, and the failed names are logged and in the summary), 2 for usage, credential or bucket errors.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
import stat
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterator

import google_crc32c
from tqdm import tqdm

from sign_vq import shards
from sign_vq.errors import UserError
from sign_vq.fileio import atomic_open

HELP = "mirror a GCS bucket (or list a local folder) and write the shard lists"
log = logging.getLogger(__name__)

MANIFEST = "manifest.tsv"
REMOVED = "removed.tsv"
TMP_DIR = ".sync-tmp"
LOCK = ".sync.lock"
SUMMARY = "sync-summary.json"
MANIFEST_COLUMNS = ("name", "size", "crc32c", "generation")
RESERVED_TOP = {MANIFEST, REMOVED, TMP_DIR, LOCK}
CHECKPOINT_SECONDS = 60.0
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


@dataclasses.dataclass
class Outcome:
    """What a worker did with one object: `downloaded`, `verified` (local file matched) or `failed`."""

    kind: str
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
            info = os.lstat(dest) if os.path.lexists(dest) else None
            if info and stat.S_ISREG(info.st_mode) and info.st_size == entry.size:
                if file_crc32c(dest) == entry.crc32c:
                    return Outcome("verified", entry)
        except OSError as error:
            return Outcome("failed", entry, error=f"local file: {error}")
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
                return Outcome("downloaded", entry, size)
            except self.retryable as caught:
                error = caught
                log.debug("%s: attempt %d failed: %s", entry.name, attempt + 1, caught)
            except Exception as caught:  # not found, forbidden, local disk errors: retrying will not help
                error = caught
                break
        tmp.unlink(missing_ok=True)
        return Outcome("failed", entry, error=f"{type(error).__name__}: {error}".splitlines()[0][:300])

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


def list_bucket(client, bucket: str, prefix: str) -> Iterator[tuple[str, int, str | None, int]]:
    """(full name, size, crc32c, generation) of every object under ``prefix``: one paginated listing."""
    from google.api_core import exceptions as api
    from google.auth.exceptions import GoogleAuthError

    url = f"gs://{bucket}/{prefix}"
    try:
        for blob in tqdm(client.list_blobs(bucket, prefix=prefix, fields=LIST_FIELDS),
                         desc="list", unit="obj", disable=None):
            yield blob.name, int(blob.size or 0), blob.crc32c, int(blob.generation or 0)
    except api.NotFound:
        raise UserError(f"{url}: bucket not found") from None
    except (api.Forbidden, api.Unauthorized) as error:
        raise UserError(f"{url}: access denied ({error.message}); check the credentials "
                        "(gcloud auth application-default login) or use --anonymous for a public bucket") from None
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
    client_factory=None,
) -> dict:
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
        listed, placeholders = 0, 0
        refused: dict[str, str] = {}  # full object name -> reason
        remote: dict[str, Entry] = {}
        for name, size, crc, generation in list_bucket(client_factory(), bucket, prefix):
            listed += 1
            rel = name[len(prefix):]
            if rel.endswith("/") and size == 0 and refusal(rel.rstrip("/")) is None:
                placeholders += 1  # a "folder" object made by the console: nothing to mirror
                continue
            reason = refusal(rel) or (None if crc else "no crc32c in the listing: cannot be verified")
            if reason:
                refused[name] = reason
            else:
                remote[rel] = Entry(rel, size, crc, generation)
        for rel in folder_clashes(list(remote)):
            refused[prefix + rel] = "clashes with the folder of another object"
            del remote[rel]
        for name, reason in sorted(refused.items())[:20]:
            log.warning("refused object %r: %s", name, reason)
        if len(refused) > 20:
            log.warning("... and %d more refused objects (all in %s)", len(refused) - 20, lists_dir / SUMMARY)

        old = read_manifest(mirror / MANIFEST)
        kept = read_manifest(mirror / REMOVED)
        current: dict[str, Entry] = {}  # what the mirror holds verified, for names in the bucket
        todo: list[Entry] = []
        for rel, entry in remote.items():
            previous = old.get(rel) or kept.get(rel)
            if previous is not None:
                current[rel] = previous
            path = mirror / rel
            if not verify and entry.same_content(previous):
                with contextlib.suppress(OSError):
                    info = os.lstat(path)
                    if stat.S_ISREG(info.st_mode) and info.st_size == entry.size:
                        current[rel] = entry
                        continue
            todo.append(entry)
        skipped = len(remote) - len(todo)

        syncer = Syncer(client_factory, bucket, prefix, mirror, retries=retries, retry_wait=retry_wait,
                        timeout=timeout)
        counts = {"downloaded": 0, "verified": 0}
        failed: dict[str, str] = {}
        nbytes = 0
        aborted = 0
        abort_after = max(20, 4 * threads)  # consecutive failures that mean the service is unreachable
        streak = 0
        todo.sort(key=lambda e: e.name)
        log.info("gs://%s/%s: %d objects listed, %d up to date, %d to check or download with %d threads",
                 bucket, prefix, listed, skipped, len(todo), threads)
        last_checkpoint = time.monotonic()
        with ThreadPoolExecutor(threads, thread_name_prefix="sync") as pool, \
                tqdm(total=len(todo), desc="sync", unit="file", disable=None) as bar:
            pending: set[Future] = set()
            queue = iter(todo)
            try:
                while True:
                    while len(pending) < 4 * threads and streak < abort_after:
                        entry = next(queue, None)
                        if entry is None:
                            break
                        pending.add(pool.submit(syncer.sync_one, entry))
                    if not pending:
                        break
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        outcome = future.result()
                        rel = outcome.entry.name
                        if outcome.kind == "failed":
                            failed[rel] = outcome.error
                            current.pop(rel, None)
                            streak += 1
                        else:
                            counts[outcome.kind] += 1
                            current[rel] = outcome.entry
                            nbytes += outcome.size
                            streak = 0
                        bar.update()
                    bar.set_postfix(MB=f"{nbytes / 1e6:.1f}", failed=len(failed), refresh=False)
                    if time.monotonic() - last_checkpoint > CHECKPOINT_SECONDS:
                        write_manifest(mirror / MANIFEST, current)  # a kill now loses no verified download
                        last_checkpoint = time.monotonic()
            finally:
                for future in pending:
                    future.cancel()
                write_manifest(mirror / MANIFEST, current)
            for entry in queue:
                failed[entry.name] = "not attempted: too many consecutive failures"
                aborted += 1
        if aborted:
            log.error("stopped after %d consecutive failures (service unreachable?): %d objects not attempted",
                      abort_after, aborted)

        removed = sorted((set(old) | set(kept)) - set(remote) - {n[len(prefix):] for n in refused})
        new_kept = {rel: (old.get(rel) or kept[rel]) for rel in removed}
        deleted = 0
        if delete_removed:
            for rel in removed:
                path = mirror / rel
                try:
                    if refusal(rel) is None and os.path.lexists(path):
                        if path.is_symlink() or not path.is_file():
                            raise OSError("not a regular file")
                        syncer.destination(rel)
                        path.unlink()
                        _prune_empty_parents(path, mirror)
                    deleted += 1
                    del new_kept[rel]
                except OSError as error:
                    log.warning("cannot delete %s: %s", path, error)
        for rel in removed:
            log.info("removed in the bucket: %s (%s)", rel, "kept" if rel in new_kept else "deleted")
        write_manifest(mirror / REMOVED, new_kept)

        pose_names = [rel for rel in sorted(current) if rel.endswith(shards.POSE_SUFFIX)]
        files = [mirror / rel for rel in pose_names]
        keys = dict(zip(files, pose_names))
        changed = shards.write_shard_lists(files, lists_dir, num_shards, key=keys.__getitem__)

        seconds = time.monotonic() - started
        summary = {
            "source": f"gs://{bucket}/{prefix}",
            "mirror": str(mirror),
            "shards": num_shards,
            "threads": threads,
            "listed": listed,
            "mirrored": len(current),
            "downloaded": counts["downloaded"],
            "skipped": skipped + counts["verified"],
            "verified_local": counts["verified"],
            "refused_count": len(refused),
            "refused": [{"name": n, "reason": r} for n, r in sorted(refused.items())],
            "folder_placeholders": placeholders,
            "removed_in_bucket": removed,
            "deleted": deleted,
            "kept_removed": len(new_kept),
            "failed_count": len(failed),
            "failed": [{"name": prefix + n, "error": e} for n, e in sorted(failed.items())],
            "bytes": nbytes,
            "seconds": round(seconds, 3),
            "stale_temp_removed": stale,
            "lists_changed": [p.name for p in changed],
        }
        with atomic_open(lists_dir / SUMMARY) as handle:
            json.dump(summary, handle, indent=1)
            handle.write("\n")
    log.info(
        "sync %s: %d listed, %d downloaded (%.1f MB), %d skipped, %d refused, %d removed in bucket (%d deleted), "
        "%d failed, %d/%d shard lists changed, %.1f s",
        summary["source"], listed, counts["downloaded"], nbytes / 1e6, summary["skipped"], len(refused),
        len(removed), deleted, len(failed), len(changed), num_shards, seconds,
    )
    for name, error in sorted(failed.items())[:20]:
        log.error("failed: %s%s: %s", prefix, name, error)
    if len(failed) > 20:
        log.error("... and %d more failures (all in %s)", len(failed) - 20, lists_dir / SUMMARY)
    return summary


def sync_local(root: Path, lists_dir: Path, num_shards: int) -> dict:
    """Shard every `*.pose` under ``root`` (no copy); returns the summary (also written as JSON)."""
    started = time.monotonic()
    files = shards.find_poses(root)
    changed = shards.write_shard_lists(files, lists_dir, num_shards, key=shards.relative_key(root))
    summary = {"source": str(root), "shards": num_shards, "listed": len(files), "mirrored": len(files),
               "lists_changed": [p.name for p in changed], "seconds": round(time.monotonic() - started, 3)}
    with atomic_open(Path(lists_dir) / SUMMARY) as handle:
        json.dump(summary, handle, indent=1)
        handle.write("\n")
    log.info("listed %d .pose files under %s into %d shards (%d lists changed)", len(files), root, num_shards,
             len(changed))
    return summary


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser, _stage: str) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bucket", metavar="gs://BUCKET[/PREFIX]", help="bucket (and folder) to mirror")
    source.add_argument("--local", type=Path, metavar="DIR", help="list the .pose files under DIR (no copy)")
    parser.add_argument("--output", type=Path, metavar="MIRROR_DIR", help="mirror folder (with --bucket)")
    parser.add_argument("--lists", type=Path, required=True, metavar="LISTS_DIR", help="folder of shard lists")
    parser.add_argument("--shards", type=int, required=True, metavar="K", help="number of shard lists")
    parser.add_argument("--threads", type=int, default=8, metavar="N", help="parallel downloads (default 8)")
    parser.add_argument("--delete-removed", action="store_true",
                        help="delete mirrored files whose object was removed from the bucket (default: keep)")
    parser.add_argument("--anonymous", action="store_true", help="no credentials (public buckets)")
    parser.add_argument("--retries", type=int, default=5, metavar="N",
                        help="retries per object after a failure (default 5)")
    parser.add_argument("--retry-wait", type=float, default=0.5, metavar="SECONDS",
                        help="first wait before a retry; doubles each time (default 0.5)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS", help="per-request timeout (default 120)")
    parser.add_argument("--verify", action="store_true",
                        help="re-checksum local files even when the manifest says they are up to date")


def run(args: argparse.Namespace) -> int:
    if args.local is not None:
        if args.output is not None:
            raise UserError("--output is only used with --bucket (--local lists files where they are)")
        sync_local(args.local, args.lists, args.shards)
        return 0
    if args.output is None:
        raise UserError("--bucket needs --output MIRROR_DIR")
    summary = sync_bucket(
        args.bucket, args.output, args.lists, args.shards, threads=args.threads,
        delete_removed=args.delete_removed, anonymous=args.anonymous, retries=args.retries,
        retry_wait=args.retry_wait, timeout=args.timeout, verify=args.verify,
    )
    return 1 if summary["failed_count"] else 0


if __name__ == "__main__":
    from sign_vq.cli import run_module

    run_module("sync")

"""Sync stage against a real GCS-compatible server (fake-gcs-server on 127.0.0.1) with real pose files."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
from dataclasses import astuple
from pathlib import Path
from types import SimpleNamespace

import google_crc32c
import pytest

from gcs_server import GcsServer
from sign_vq.cli import main
from sign_vq.formats.shards import list_path, read_list, shard_of
from sign_vq.mirror.download import Syncer, stop_after
from sign_vq.mirror.manifest import MANIFEST, REMOVED, Entry, file_crc32c, read_manifest
from sign_vq.mirror.plan import TMP_DIR, folder_clashes, plan, read_listing, refusal
from sign_vq.mirror.sync import Summary, sync_bucket

K = 7
OLD = 1_000_000_000
HOSTILE = ["../evil.pose", "a/../../evil.pose", "/etc/x.pose", ".", "..", "a//b.pose", "clash",
           "a\\..\\evil.pose", "nul\0.pose", "new\nline.pose", "tab\t.pose"]


@pytest.fixture(scope="module")
def server():
    """One memory-backend server for the module; STORAGE_EMULATOR_HOST points the library at it."""
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    with GcsServer() as srv:
        os.environ["STORAGE_EMULATOR_HOST"] = srv.url
        yield srv
    if saved is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = saved


@pytest.fixture(scope="module")
def sample(data_dir) -> dict[str, bytes]:
    """The real pose files of the test corpus keyed by their path under its folder (several languages and folders)."""
    files = sorted(data_dir.rglob("*.pose"))
    return {f.relative_to(data_dir).as_posix(): f.read_bytes() for f in files}


_buckets = iter(range(10**6))


def make_bucket(server: GcsServer, objects: dict[str, bytes], prefix: str = "poses/"):
    """A new bucket holding ``objects`` under ``prefix``; returns (bucket, url)."""
    bucket = server.client().create_bucket(f"test-{next(_buckets)}")
    upload(bucket, objects, prefix)
    return bucket, f"gs://{bucket.name}/{prefix.rstrip('/')}"


def upload(bucket, objects: dict[str, bytes], prefix: str = "poses/") -> None:
    for name, data in objects.items():
        bucket.blob(prefix + name).upload_from_string(data)


def sync(url: str, tmp: Path, *extra: str) -> tuple[int, dict]:
    rc = main(["sync", "--bucket", url, "--output", str(tmp / "mirror"), "--lists", str(tmp / "lists"),
               "--shards", str(K), "--threads", "4", "--retry-wait", "0.01", *extra])
    return rc, json.loads((tmp / "lists" / "sync-summary.json").read_text())


def mirrored(tmp: Path) -> dict[str, bytes]:
    """Every file of the mirror except the stage's own bookkeeping."""
    mirror = tmp / "mirror"
    return {p.relative_to(mirror).as_posix(): p.read_bytes() for p in mirror.rglob("*")
            if p.is_file() and p.name not in {MANIFEST, REMOVED, ".sync.lock"}}


def listed(tmp: Path) -> list[Path]:
    return [p for k in range(K) for p in read_list(list_path(tmp / "lists", k))]


def test_full_sync_rerun_and_incremental(server, sample, tmp_path):
    bucket, url = make_bucket(server, sample)
    upload(bucket, {"notes/readme.txt": b"not a pose"})
    rc, summary = sync(url, tmp_path)
    assert rc == 0
    assert mirrored(tmp_path) == {**sample, "notes/readme.txt": b"not a pose"}  # byte-identical
    assert summary["listed"] == summary["downloaded"] == len(sample) + 1 and summary["failed_count"] == 0
    manifest = read_manifest(tmp_path / "mirror" / MANIFEST)
    assert set(manifest) == set(mirrored(tmp_path))
    for name, entry in manifest.items():
        assert entry.size == len(mirrored(tmp_path)[name])
        assert entry.crc32c == file_crc32c(tmp_path / "mirror" / name)
    assert sorted(p.resolve() for p in listed(tmp_path)) == sorted(
        (tmp_path / "mirror" / n).resolve() for n in sample)  # .pose files only, each in one list
    for k in range(K):
        for line in list_path(tmp_path / "lists", k).read_text().splitlines():
            name, size, crc, generation = line.split("\t")  # each object's fingerprint follows its path
            assert shard_of(name.removeprefix("../mirror/"), K) == k
            assert (int(size), crc, int(generation)) == astuple(manifest[name.removeprefix("../mirror/")])[1:]

    # rerun: nothing downloaded, nothing rewritten
    files = [p for p in (tmp_path / "mirror").rglob("*.pose")]
    lists = [list_path(tmp_path / "lists", k) for k in range(K)]
    _age(files + lists)
    rc, summary = sync(url, tmp_path)
    assert rc == 0 and summary["downloaded"] == 0 and summary["skipped"] == len(sample) + 1
    assert summary["lists_changed"] == []
    assert all(p.stat().st_mtime == OLD for p in files + lists)

    # one changed object (same name, other real bytes) and one new one: only those two downloaded
    names = sorted(sample)
    changed, new = names[3], "new/lexicon-copy.pose"
    upload(bucket, {changed: sample[names[4]], new: sample[names[5]]})
    rc, summary = sync(url, tmp_path)
    assert rc == 0 and summary["downloaded"] == 2 and summary["bytes"] == len(sample[names[4]]) + len(sample[names[5]])
    assert (tmp_path / "mirror" / changed).read_bytes() == sample[names[4]]
    assert (tmp_path / "mirror" / new).read_bytes() == sample[names[5]]
    new_lists = {list_path(tmp_path / "lists", shard_of(name, K)) for name in (changed, new)}
    assert summary["lists_changed"] == sorted(p.name for p in new_lists), "the changed object's fingerprint too"
    assert all(p.stat().st_mtime == OLD for p in lists if p not in new_lists)
    assert all(p.stat().st_mtime != OLD for p in new_lists)
    untouched = [p for p in files if p.relative_to(tmp_path / "mirror").as_posix() != changed]
    assert all(p.stat().st_mtime == OLD for p in untouched)

    # a missing and a wrong-size local file are downloaded again, even though the manifest lists them
    (tmp_path / "mirror" / names[0]).unlink()
    with open(tmp_path / "mirror" / names[1], "r+b") as handle:
        handle.truncate(100)
    rc, summary = sync(url, tmp_path)
    assert rc == 0 and summary["downloaded"] == 2
    assert mirrored(tmp_path)[names[0]] == sample[names[0]] and mirrored(tmp_path)[names[1]] == sample[names[1]]


def _age(paths) -> None:
    for path in paths:
        os.utime(path, (OLD, OLD))


def _assert_all_verified(tmp: Path, expected: dict[str, bytes]) -> None:
    """No temp file anywhere, and every mirrored file is exactly the object's bytes."""
    files = mirrored(tmp)
    assert not [n for n in files if n.startswith(TMP_DIR) or n.endswith((".part", ".tmp"))]
    for name, data in files.items():
        assert data == expected[name], name


def test_server_killed_mid_sync_then_restarted(sample, tmp_path, monkeypatch):
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    srv = GcsServer().start()  # its own server: this test kills it
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", srv.url)
        bucket, url = make_bucket(srv, sample)
        fetch = Syncer._fetch
        calls = []

        def fetch_then_crash(self, entry, tmp):
            calls.append(entry.name)
            if len(calls) == 8:
                srv.kill()  # the server dies while other threads are downloading
            return fetch(self, entry, tmp)

        monkeypatch.setattr(Syncer, "_fetch", fetch_then_crash)
        rc, summary = sync(url, tmp_path, "--retries", "2")
        assert rc == 1 and 0 < summary["failed_count"] < len(sample)
        assert summary["downloaded"] + summary["failed_count"] == len(sample)
        assert all(f["name"].startswith("poses/") for f in summary["failed"])
        _assert_all_verified(tmp_path, sample)
        assert set(read_manifest(tmp_path / "mirror" / MANIFEST)) == set(mirrored(tmp_path))
        assert len(listed(tmp_path)) == summary["downloaded"]

        srv.start()  # same port, empty memory backend: upload again (new generations, same bytes)
        upload(srv.client().create_bucket(bucket.name), sample)
        monkeypatch.setattr(Syncer, "_fetch", fetch)
        rc, second = sync(url, tmp_path)
        assert rc == 0 and second["failed_count"] == 0
        assert second["downloaded"] == summary["failed_count"]  # verified files are not fetched again
        assert mirrored(tmp_path) == sample
        manifest = read_manifest(tmp_path / "mirror" / MANIFEST)
        assert all(e.crc32c == file_crc32c(tmp_path / "mirror" / n) for n, e in manifest.items())
        assert len(listed(tmp_path)) == len(sample)
    finally:
        srv.stop()
        if saved is not None:
            os.environ["STORAGE_EMULATOR_HOST"] = saved


def test_resumed_download_is_verified(server, sample, tmp_path, monkeypatch):
    """A failed attempt leaves bytes in the temp file; the retry resumes after them and checks the whole file."""
    names = sorted(sample)
    good_half, bad_half = names[0], names[1]
    bucket, url = make_bucket(server, {good_half: sample[good_half], bad_half: sample[bad_half]})
    fetch = Syncer._fetch
    first: set[str] = set()

    def cut_first_attempt(self, entry, tmp):
        if entry.name not in first:
            first.add(entry.name)
            data = sample[entry.name][: entry.size // 2]
            if entry.name == bad_half:
                data = bytes(255 - b for b in data)  # the interrupted attempt wrote garbage
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            raise ConnectionResetError("connection reset mid-stream")
        return fetch(self, entry, tmp)

    monkeypatch.setattr(Syncer, "_fetch", cut_first_attempt)
    rc, summary = sync(url, tmp_path)
    assert rc == 0 and summary["downloaded"] == 2
    _assert_all_verified(tmp_path, sample)
    # the good partial was resumed (only the rest fetched), the garbage one caught by crc32c and fetched again
    assert summary["bytes"] == len(sample[good_half]) + len(sample[bad_half])


def test_killed_sync_leaves_nothing_unverified(server, sample, tmp_path):
    """SIGKILL the sync process in the middle of a download; the rerun cleans up and finishes."""
    bucket, url = make_bucket(server, sample)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from sign_vq.mirror.download import Syncer
        fetch, calls = Syncer._fetch, []
        def fetch_then_die(self, entry, tmp):
            calls.append(entry)
            if len(calls) == 6:
                tmp.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(b"half a download")
                os.kill(os.getpid(), signal.SIGKILL)
            return fetch(self, entry, tmp)
        Syncer._fetch = fetch_then_die
        from sign_vq.cli import main
        main(sys.argv[1:])
    """)
    args = ["sync", "--bucket", url, "--output", str(tmp_path / "mirror"), "--lists", str(tmp_path / "lists"),
            "--shards", str(K), "--threads", "1"]
    env = {**os.environ, "STORAGE_EMULATOR_HOST": server.url}
    killed = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True)
    assert killed.returncode == -9
    assert list((tmp_path / "mirror" / TMP_DIR).iterdir())  # a partial download was left behind
    rc, summary = sync(url, tmp_path)
    assert rc == 0 and summary["stale_temp_removed"] >= 1
    assert summary["verified_local"] == 5  # renamed before the kill: checked locally, not fetched again
    assert summary["downloaded"] == len(sample) - 5
    assert mirrored(tmp_path) == sample


def test_object_not_matching_its_crc32c(sample, tmp_path, monkeypatch, caplog):
    """Bytes rotted on the server (filesystem backend, file edited behind its back): clear error, no file."""
    names = sorted(sample)[:3]
    root = tmp_path / "gcs"
    with GcsServer(root=root) as srv:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", srv.url)
        bucket, url = make_bucket(srv, {n: sample[n] for n in names})
        stored = root / bucket.name / "poses" / names[1]
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
        stored.write_bytes(bytes(data))
        assert srv.client().bucket(bucket.name).blob("poses/" + names[1]).download_as_bytes(checksum=None) == data
        rc, summary = sync(url, tmp_path, "--retries", "1")
    assert rc == 1
    assert [f["name"] for f in summary["failed"]] == ["poses/" + names[1]]
    assert "crc32c" in summary["failed"][0]["error"]
    assert any("poses/" + names[1] in r.getMessage() and "crc32c" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "mirror" / names[1]).exists()
    assert mirrored(tmp_path) == {n: sample[n] for n in names if n != names[1]}
    assert not list((tmp_path / "mirror" / TMP_DIR).rglob("*"))


def test_hostile_names_are_refused(server, sample, tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    ok = sample[sorted(sample)[0]]
    objects = {name: b"evil" for name in HOSTILE}
    objects.update({"ok.pose": ok, "clash/child.pose": ok, "manifest.tsv": b"x", ".sync-tmp/a.pose": b"x"})
    bucket, url = make_bucket(server, objects, prefix="")
    upload(bucket, {"pre/../evil.pose": b"evil", "pre/fine.pose": ok}, prefix="")
    before = set(Path("/etc").iterdir())
    rc, summary = sync(url, box)
    assert rc == 0
    refused = {r["name"]: r["reason"] for r in summary["refused"]}
    assert set(refused) == {*HOSTILE, "manifest.tsv", ".sync-tmp/a.pose", "pre/../evil.pose"}
    assert "folder" in refused["clash"] and "backslash" in refused["a\\..\\evil.pose"]
    assert mirrored(box) == {"ok.pose": ok, "clash/child.pose": ok, "pre/fine.pose": ok}
    assert sorted(p.name for p in box.iterdir()) == ["lists", "mirror"]  # nothing beside the mirror
    assert not (tmp_path / "evil.pose").exists() and set(Path("/etc").iterdir()) == before
    # with a prefix, names are checked relative to it
    rc, summary = sync(f"gs://{bucket.name}/pre", tmp_path / "prefixed")
    assert [r["name"] for r in summary["refused"]] == ["pre/../evil.pose"]
    assert mirrored(tmp_path / "prefixed") == {"fine.pose": ok}


@pytest.mark.parametrize("name", [*(n for n in HOSTILE if n != "clash"), "", "a/", "x" * 256 + ".pose", "removed.tsv", ".sync.lock",
                                  ".manifest.tsv.abc.tmp", "del\x7f.pose"])
def test_refusal_unit(name):
    assert refusal(name) is not None


def test_refusal_accepts_ordinary_names():
    for name in ["a.pose", "fingerspelling/gsg/a b.pose", "ü/ñ.pose", "...pose", "a/.hidden.pose", "x/manifest.tsv"]:
        assert refusal(name) is None, name
    assert folder_clashes(["clash", "clash/child.pose", "a/b/c", "a"]) == {"clash", "a"}


def test_symlink_in_mirror_cannot_redirect_writes(server, sample, tmp_path):
    ok = sample[sorted(sample)[0]]
    bucket, url = make_bucket(server, {"sub/x.pose": ok, "y.pose": ok})
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "sub").symlink_to(outside)
    rc, summary = sync(url, tmp_path)
    assert rc == 1 and [f["name"] for f in summary["failed"]] == ["poses/sub/x.pose"]
    assert list(outside.iterdir()) == []
    assert (tmp_path / "mirror" / "y.pose").read_bytes() == ok


def test_removed_objects_kept_or_deleted(server, sample, tmp_path):
    names = sorted(sample)[:4]
    bucket, url = make_bucket(server, {n: sample[n] for n in names})
    assert sync(url, tmp_path)[0] == 0
    gone = names[2]
    bucket.blob("poses/" + gone).delete()
    rc, summary = sync(url, tmp_path)
    assert rc == 0 and summary["removed_in_bucket"] == [gone] and summary["deleted"] == 0
    assert (tmp_path / "mirror" / gone).read_bytes() == sample[gone]  # kept
    assert gone not in read_manifest(tmp_path / "mirror" / MANIFEST)
    assert gone in read_manifest(tmp_path / "mirror" / REMOVED)
    assert (tmp_path / "mirror" / gone).resolve() not in [p.resolve() for p in listed(tmp_path)]

    rc, summary = sync(url, tmp_path, "--delete-removed")
    assert rc == 0 and summary["removed_in_bucket"] == [gone] and summary["deleted"] == 1
    assert not (tmp_path / "mirror" / gone).exists()
    assert not (tmp_path / "mirror" / REMOVED).exists()
    assert set(mirrored(tmp_path)) == set(names) - {gone}
    rc, summary = sync(url, tmp_path, "--delete-removed")
    assert summary["removed_in_bucket"] == [] and summary["downloaded"] == 0


def test_user_errors(server, tmp_path):
    lists = ["--lists", str(tmp_path / "l"), "--shards", "2"]
    with pytest.raises(SystemExit) as no_output:
        main(["sync", "--bucket", "gs://b", *lists])
    assert no_output.value.code == 2
    assert main(["sync", "--bucket", "s3://b", "--output", str(tmp_path / "m"), *lists]) == 2
    assert main(["sync", "--bucket", "gs://no-such-bucket", "--output", str(tmp_path / "m"), *lists]) == 2


def test_verify_rechecks_local_bytes(server, sample, tmp_path):
    """A same-size local edit is trusted by a plain rerun (manifest + size) but caught by --verify."""
    names = sorted(sample)[:3]
    bucket, url = make_bucket(server, {n: sample[n] for n in names})
    assert sync(url, tmp_path)[0] == 0
    path = tmp_path / "mirror" / names[0]
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert sync(url, tmp_path)[1]["downloaded"] == 0
    rc, summary = sync(url, tmp_path, "--verify")
    assert rc == 0 and summary["downloaded"] == 1 and summary["verified_local"] == 2
    assert path.read_bytes() == sample[names[0]]


def test_concurrent_sync_on_one_mirror_is_refused(server, sample, tmp_path):
    import fcntl

    bucket, url = make_bucket(server, {"a.pose": sample[sorted(sample)[0]]})
    (tmp_path / "mirror").mkdir()
    with open(tmp_path / "mirror" / ".sync.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert main(["sync", "--bucket", url, "--output", str(tmp_path / "mirror"), "--lists",
                     str(tmp_path / "lists"), "--shards", "2"]) == 2
    assert sync(url, tmp_path)[0] == 0


# ----------------------------------------------------------------------------- without a server (fast)


def _crc(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode("ascii")


class MemoryClient:
    """Stands in for the storage client: lists and serves ``objects`` from memory; ``fail(name)`` makes a download
    raise a connection error. ``downloads`` records every download attempt."""

    def __init__(self, objects: dict[str, bytes], fail=lambda name: False):
        self.objects, self.fail = objects, fail
        self.downloads: list[str] = []

    def list_blobs(self, bucket, prefix, fields, **_):  # timeout, retry
        return [SimpleNamespace(name=n, size=len(d), crc32c=_crc(d), generation=1)
                for n, d in sorted(self.objects.items()) if n.startswith(prefix)]

    def bucket(self, name):
        return self

    def blob(self, name, generation):
        return SimpleNamespace(download_to_file=lambda handle, start=None, **_: self._download(name, handle, start))

    def _download(self, name: str, handle, start: int | None) -> None:
        self.downloads.append(name)
        if self.fail(name):
            raise ConnectionRefusedError("connection refused")
        handle.write(self.objects[name][start or 0:])


def sync_memory(client: MemoryClient, tmp: Path, threads: int = 1) -> Summary:
    return sync_bucket("gs://b/poses", tmp / "mirror", tmp / "lists", 2, threads=threads, retries=0,
                                   client_factory=lambda: client)


def test_sync_stops_after_repeated_failures(tmp_path, caplog):
    objects = {f"poses/{i:03d}.pose": b"pose bytes" for i in range(100)}
    client = MemoryClient(objects, fail=lambda name: True)
    summary = sync_memory(client, tmp_path)
    limit, attempted = stop_after(1), len(client.downloads)
    assert limit <= attempted < limit + 4  # one thread: what was queued (4 per thread) when it stopped still ran
    assert client.downloads == sorted(objects)[:attempted]
    written = json.loads((tmp_path / "lists" / "sync-summary.json").read_text())
    assert written["failed_count"] == summary.failed_count == 100 and written["downloaded"] == 0
    assert written["not_attempted"] == 100 - attempted
    not_tried = [f["name"] for f in written["failed"] if f["error"].startswith("not attempted")]
    assert not_tried == sorted(objects)[attempted:]
    assert f"stopped after {limit} consecutive failures" in caplog.text
    assert mirrored(tmp_path) == {} and read_manifest(tmp_path / "mirror" / MANIFEST) == {}


def test_a_success_resets_the_failure_count(tmp_path):
    objects = {f"poses/{i:03d}.pose": bytes([i]) * 10 for i in range(100)}
    client = MemoryClient(objects, fail=lambda name: not name.endswith("0.pose"))  # 9 failures between successes
    summary = sync_memory(client, tmp_path)
    assert len(client.downloads) == 100 and summary.downloads.not_attempted == 0
    assert summary.downloads.downloaded == 10 and summary.failed_count == 90
    assert mirrored(tmp_path) == {n.removeprefix("poses/"): d for n, d in objects.items() if n.endswith("0.pose")}


def _no_umask(mask: int) -> int:
    raise AssertionError("os.umask called: it changes the mode of files other threads create meanwhile")


def test_files_created_by_sync_threads_get_the_normal_mode(tmp_path, monkeypatch):
    """Downloads (4 threads), manifests, lists and summary get 0666/0777 less the umask; the umask is never touched."""
    objects = {f"poses/d{i % 3}/{i:02d}.pose": bytes([i]) * (100 + i) for i in range(24)}
    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", _no_umask)
        summary = sync_memory(MemoryClient(objects), tmp_path, threads=4)
    finally:
        monkeypatch.undo()
        os.umask(previous)
    assert summary.downloads.downloaded == 24 and summary.failed_count == 0
    modes = {p: stat.S_IMODE(p.lstat().st_mode) for p in tmp_path.rglob("*")}
    assert {mode for p, mode in modes.items() if p.is_file()} == {0o640}
    assert {mode for p, mode in modes.items() if p.is_dir()} == {0o750}
    assert len([p for p in modes if p.suffix == ".pose"]) == 24


def _entry(name: str, crc: str = "A", size: int = 10, generation: int = 1) -> Entry:
    return Entry(name, size, crc, generation)


def test_listing_and_plan():
    """The pure plan: up to date (manifest + local size) vs to check or download; what left the bucket."""
    objects = [("p/same.pose", 10, "A", 2), ("p/changed.pose", 10, "B", 2), ("p/new.pose", 5, "C", 1),
               ("p/missing.pose", 10, "A", 1), ("p/back.pose", 10, "A", 1), ("p/../evil.pose", 1, "E", 1),
               ("p/folder/", 0, "X", 1), ("p/nocrc.pose", 3, None, 1), ("p/x", 1, "D", 1), ("p/x/y.pose", 1, "F", 1)]
    listing = read_listing(objects, "p/")
    assert listing.listed == 10 and listing.placeholders == 1
    assert set(listing.refused) == {"p/../evil.pose", "p/nocrc.pose", "p/x"}
    old = {n: _entry(n) for n in ("same.pose", "changed.pose", "missing.pose", "gone.pose", "x")}
    kept = {n: _entry(n) for n in ("back.pose", "long-gone.pose")}
    on_disk = {"same.pose": 10, "changed.pose": 10, "back.pose": 10, "x": 1}
    work = plan(listing, old, kept, on_disk.get)
    assert [e.name for e in work.todo] == ["changed.pose", "missing.pose", "new.pose", "x/y.pose"]
    assert work.current == {"same.pose": listing.remote["same.pose"], "back.pose": listing.remote["back.pose"],
                            "changed.pose": old["changed.pose"], "missing.pose": old["missing.pose"]}
    assert work.removed == {"gone.pose": old["gone.pose"], "long-gone.pose": kept["long-gone.pose"]}  # not "x"
    assert len(plan(listing, old, kept, on_disk.get, verify=True).todo) == len(listing.remote)


@pytest.mark.parametrize("listening", [True, False], ids=["never-accepting", "closed-port"])
def test_timeout_and_retries_bound_an_unreachable_endpoint(tmp_path, listening):
    """The client library's own retry (120 s) must not outlast --timeout/--retries: a socket that takes the connection
    but never answers, or a closed port. Run as a command with a far larger bound, so a hang fails."""
    with socket.socket() as endpoint:
        endpoint.bind(("127.0.0.1", 0))
        if listening:
            endpoint.listen(8)
        env = {**os.environ, "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{endpoint.getsockname()[1]}"}
        command = [sys.executable, "-m", "sign_vq.cli", "sync", "--bucket", "gs://bucket/poses", "--output",
                   str(tmp_path / "mirror"), "--lists", str(tmp_path / "lists"), "--shards", "2", "--timeout", "1",
                   "--retries", "1", "--retry-wait", "0.01"]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=100)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "no answer within --timeout 1 s and --retries 1" in result.stderr

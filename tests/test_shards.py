"""Shard lists: stable hashing, one new name changes one list, unchanged lists keep their mtime, bad entries of a
folder are skipped with their reason, any listable name survives a list round trip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sign_vq.errors import UserError
from sign_vq.formats.shards import (
    list_entries,
    list_path,
    read_list,
    relative_key,
    scan_poses,
    shard_of,
    shard_texts,
    write_shard_lists,
)

OLD = 1_000_000_000  # an mtime far in the past


def write_local_lists(root: Path, lists: Path, num_shards: int) -> list[Path]:
    """What the workflow's shard_list jobs do for a local folder: its usable files, sharded by relative path."""
    listing = scan_poses(root)
    return write_shard_lists(listing.files, lists, num_shards, relative_key(root), listing.fingerprints())


def _tree(root: Path, names: list[str]) -> list[Path]:
    files = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        files.append(path)
    return files


def _age(paths) -> None:
    for path in paths:
        os.utime(path, (OLD, OLD))


def test_shard_of_is_stable_across_processes():
    names = [f"fingerspelling/gsg/{c}.pose" for c in "abcdefgh"]
    here = [shard_of(n, 16) for n in names]
    code = f"from sign_vq.formats.shards import shard_of; print([shard_of(n, 16) for n in {names!r}])"
    env = {**os.environ, "PYTHONHASHSEED": "123"}  # a different str hash seed must not matter
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert other.stdout.strip() == str(here)
    # pinned values: changing the hash would reshuffle every shard of an existing run
    assert [shard_of(n, 1000) for n in ("a.pose", "lexicon/sgg/kleine.pose", "fingerspelling/gsg/a.pose")] == [
        722, 13, 309]
    assert shard_of("a.pose", 1) == 0


def test_shards_spread_evenly():
    counts = [0] * 8
    for i in range(8000):
        counts[shard_of(f"poses/{i:06d}.pose", 8)] += 1
    assert min(counts) > 850 and max(counts) < 1150


def test_all_lists_written_relative_sorted_and_readable(tmp_path):
    root = tmp_path / "data"
    files = _tree(root, ["b/2.pose", "a/1.pose", "c.pose"])
    lists = tmp_path / "lists"
    changed = write_shard_lists(files, lists, 5, key=relative_key(root))
    assert sorted(changed) == [list_path(lists, k) for k in range(5)]
    assert sorted(p.name for p in lists.iterdir()) == [f"shard-{k:03d}.txt" for k in range(5)]
    listed = []
    for k in range(5):
        lines = list_path(lists, k).read_text().splitlines()
        assert lines == sorted(lines)
        assert all(line.startswith("../data/") for line in lines)
        listed += [p.resolve() for p in read_list(list_path(lists, k))]
        for line in lines:
            assert shard_of(line[len("../data/"):], 5) == k
    assert sorted(listed) == sorted(f.resolve() for f in files)


def test_one_new_file_changes_one_list_and_others_keep_mtime(tmp_path):
    root = tmp_path / "data"
    files = _tree(root, [f"s{i}/{j}.pose" for i in range(5) for j in range(5)])
    lists = tmp_path / "lists"
    write_local_lists(root, lists, 6)
    all_lists = [list_path(lists, k) for k in range(6)]
    _age(all_lists)
    assert write_local_lists(root, lists, 6) == []  # idempotent: nothing rewritten
    assert all(p.stat().st_mtime == OLD for p in all_lists)

    (root / "s9").mkdir()
    (root / "s9" / "new.pose").write_bytes(b"x")
    changed = write_local_lists(root, lists, 6)
    expected = list_path(lists, shard_of("s9/new.pose", 6))
    assert changed == [expected]
    assert all(p.stat().st_mtime == OLD for p in all_lists if p != expected)
    assert (root / "s9" / "new.pose").resolve() in [p.resolve() for p in read_list(expected)]
    assert len(files) == 25


def test_a_rewritten_file_of_the_same_size_changes_exactly_its_list(tmp_path):
    root = tmp_path / "data"
    files = _tree(root, [f"{j}.pose" for j in range(12)])
    _age(files)
    lists = tmp_path / "lists"
    write_local_lists(root, lists, 4)
    files[5].write_bytes(b"y")  # same name, same size, new bytes (and a new mtime)
    assert write_local_lists(root, lists, 4) == [list_path(lists, shard_of("5.pose", 4))]


def test_list_entries_carry_the_recorded_sizes_and_take_bare_lines(tmp_path):
    list_file = tmp_path / "lists" / "shard-000.txt"
    list_file.parent.mkdir()
    list_file.write_text("../a.pose\t1234\t99\n# a comment\n\n/abs/b.pose\n../c d.pose\tjunk\n")
    assert list_entries(list_file) == [
        (list_file.parent / "../a.pose", 1234), (Path("/abs/b.pose"), None), (list_file.parent / "../c d.pose", None)]


def test_fewer_shards_remove_stale_lists_and_empty_lists_exist(tmp_path):
    root = tmp_path / "data"
    _tree(root, ["only.pose"])
    lists = tmp_path / "lists"
    write_local_lists(root, lists, 4)
    write_local_lists(root, lists, 2)
    assert sorted(p.name for p in lists.iterdir()) == ["shard-000.txt", "shard-001.txt"]
    assert sum(len(list_path(lists, k).read_text().splitlines()) for k in range(2)) == 1


def test_scan_poses_skips_other_files_and_sync_temp(tmp_path):
    _tree(tmp_path, ["a.pose", "b.txt", "d/c.pose", ".sync-tmp/x.pose", "e.pose.part"])
    listing = scan_poses(tmp_path)
    assert [Path(p).relative_to(tmp_path).as_posix() for p in listing.files] == ["a.pose", "d/c.pose"]
    assert [Path(p).name for p in listing.others] == ["b.txt", "e.pose.part"] and listing.skipped == []
    assert f"{tmp_path}/b.txt\tnot a .pose file" in listing.report().splitlines()
    with pytest.raises(UserError):
        scan_poses(tmp_path / "missing")
    with pytest.raises(UserError):
        write_shard_lists([], tmp_path / "lists", 0)


def test_real_data_local_mode_is_complete(data_dir, tmp_path):
    write_local_lists(data_dir, tmp_path, 8)
    listed = [p for k in range(8) for p in read_list(list_path(tmp_path, k))]
    assert sorted(p.resolve() for p in listed) == sorted(data_dir.rglob("*.pose"))


def test_bad_entries_are_skipped_with_their_reason_and_the_rest_listed(tmp_path):
    good = _tree(tmp_path, ["good.pose", "sub/also good.pose", "x.pose/inside.pose"])
    _tree(tmp_path, ["bad\nname.pose", "tab\tname.pose"])
    (tmp_path / "a.pose").symlink_to("b.pose")
    (tmp_path / "b.pose").symlink_to("a.pose")
    (tmp_path / "dangling.pose").symlink_to("missing.pose")
    os.mkfifo(tmp_path / "fifo.pose")
    Path(os.fsdecode(os.fsencode(tmp_path) + b"/latin1-\xe9.pose")).write_bytes(b"x")
    listing = scan_poses(tmp_path)
    assert listing.files == sorted(map(str, good))
    reasons = {Path(path).name: reason for path, reason in listing.skipped}
    assert reasons == {
        "a.pose": "Too many levels of symbolic links",
        "b.pose": "Too many levels of symbolic links",
        "bad\nname.pose": "the name holds a line break or control character",
        "tab\tname.pose": "the name holds a line break or control character",
        "dangling.pose": "No such file or directory",
        "fifo.pose": "not a regular file",
        "x.pose": "a folder, not a pose file",
        os.fsdecode(b"latin1-\xe9.pose"): "the name is not valid UTF-8",
    }
    report = listing.report().splitlines()
    assert report[0] == "path\treason" and len(report) == 1 + len(reasons)
    assert f"{tmp_path}/bad\\nname.pose\tthe name holds a line break or control character" in report
    assert f"{tmp_path}/latin1-\\xe9.pose\tthe name is not valid UTF-8" in report


def _as_another_user(monkeypatch) -> None:
    """Root reads whatever the mode: make the access checks and folder listing answer as another user would."""
    def unreadable(path) -> bool:
        return os.stat(path).st_mode & 0o444 == 0

    monkeypatch.setattr(os, "access", lambda path, mode: not unreadable(path))
    scandir = os.scandir

    def refusing_scandir(path):
        if unreadable(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing_scandir)


def test_unreadable_files_and_folders_are_skipped(tmp_path, monkeypatch):
    (good,) = _tree(tmp_path, ["good.pose"])
    locked, hidden = _tree(tmp_path, ["locked.pose", "closed/inner.pose"])
    locked.chmod(0)
    hidden.parent.chmod(0)
    if os.geteuid() == 0:
        _as_another_user(monkeypatch)
    try:
        listing = scan_poses(tmp_path)
    finally:
        hidden.parent.chmod(0o755)
    assert listing.files == [str(good)]
    assert dict(listing.skipped) == {
        str(locked): "not readable (permission denied)",
        str(hidden.parent): "cannot list the folder (Permission denied)",
    }


def test_any_listable_name_survives_a_list_round_trip(tmp_path):
    names = ["#hash.pose", " lead space.pose", "unicode-ü-手.pose", "semi;colon $(x) 'q'.pose", "d/ spaced dir/a.pose"]
    files = _tree(tmp_path, names)
    texts = shard_texts(files, tmp_path, 1, key=relative_key(tmp_path))
    assert all(line.startswith("./") for line in texts[0].splitlines())
    list_file = tmp_path / "list.txt"
    list_file.write_text(texts[0])
    assert sorted(read_list(list_file)) == sorted(files)


def test_names_that_cannot_be_lines_are_left_out_of_lists(tmp_path):
    files = [tmp_path / "ok.pose", tmp_path / "new\nline.pose", Path(os.fsdecode(os.fsencode(tmp_path) + b"/\xff.pose"))]
    assert shard_texts(files, tmp_path, 1) == ["./ok.pose\n"]


def test_an_unreadable_list_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="cannot read the file list"):
        read_list(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes(b"\xff.pose\n")
    with pytest.raises(UserError, match="not UTF-8"):
        read_list(tmp_path / "latin1.txt")

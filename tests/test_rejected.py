"""`sign-vq rejected`: the listing's skipped entries and the shards' rejected files in one table."""

from __future__ import annotations

import csv
import json

from sign_vq.cli import main


def test_the_table_merges_listing_and_shards_with_clean_paths(tmp_path):
    skipped = tmp_path / "skipped.tsv"
    skipped.write_text("path\treason\nposes/notes.txt\tnot a .pose file\nposes/bad\\nname.pose\tthe name holds a line "
                       "break or control character\n")
    report = tmp_path / "shard-000.zip.report.json"
    report.write_text(json.dumps({"bad_files": [
        {"file": "results/lists/../../poses/a.pose", "reason": "poses/a.pose: empty file (0 bytes)"},
        {"file": "poses/tab\there.pose", "reason": "two\nlines"}]}))
    output = tmp_path / "rejected.tsv"
    assert main(["rejected", "--output", str(output), "--skipped", str(skipped), str(report)]) == 0
    rows = list(csv.reader(output.open(), delimiter="\t"))
    assert rows == [
        ["file", "stage", "reason"],
        ["poses/notes.txt", "listing", "not a .pose file"],
        ["poses/bad\\nname.pose", "listing", "the name holds a line break or control character"],
        ["poses/a.pose", "normalize", "poses/a.pose: empty file (0 bytes)"],
        ["poses/tab\\there.pose", "normalize", "two\\nlines"],
    ]
    assert len(output.read_text().splitlines()) == len(rows), "one line a row"


def test_a_foreign_report_is_one_line_and_nothing_is_written(tmp_path, caplog):
    report = tmp_path / "shard-000.zip.report.json"
    report.write_text('{"files": 3}')
    output = tmp_path / "rejected.tsv"
    assert main(["rejected", "--output", str(output), str(report)]) == 2
    assert not output.exists()
    assert f"{report}: not a normalize shard report" in caplog.text and "rerun" in caplog.text

"""The workflow-at-scale benchmark runs (small sizes, no full run), so `make bench-workflow` cannot rot."""

from __future__ import annotations

import json

from benchmarks import bench_workflow


def test_the_workflow_benchmark_measures_every_size(tmp_path, capsys):
    output = tmp_path / "figures.json"
    bench_workflow.main(["--sizes", "150,300", "--shards", "4", "--no-run", "--workdir", str(tmp_path),
                         "--output", str(output)])
    figures = json.loads(output.read_text())
    assert [row["n"] for row in figures["sizes"]] == [150, 300]
    for row in figures["sizes"]:
        assert row["files"] == row["n"]
        assert row["jobs"] == 4 + 4 + 7  # shard_list and normalize per shard; skipped, config, stats, archive, ...
        assert row["dry_run_s"] > 0 and row["job_parse_s"] > 0
        assert 50 < row["dry_run_mb"] < 400 and 50 < row["job_parse_mb"] < 400, "Snakemake's own peak, not pytest's"
    assert figures["run"] is None
    assert "dry run 300 / 150 files" in capsys.readouterr().out

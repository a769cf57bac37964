"""The README's commands work as written: the blocks marked `<!-- readme-test` run in order in one fresh bash (PATH
/usr/bin:/bin and HOME only; the README itself activates the venv), in a folder laid out as a checkout after
`make demo` (the repository's venv and examples, a model and an archive), so nothing is written into the checkout."""

from __future__ import annotations

import csv
import re
import subprocess
from pathlib import Path

import pytest

from conftest import EXAMPLES, REPO
from fixtures_model import make_checkpoint
from sign_vq.cli import main

README = REPO / "README.md"
MARK = "<!-- readme-test"
BLOCK = re.compile(r"^<!-- readme-test[^\n]*-->\n```(bash|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def readme_script() -> str:
    """The marked blocks as one bash script (a Python block goes through the `python` the README put on PATH)."""
    parts = ["set -euo pipefail"]
    for language, code in BLOCK.findall(README.read_text()):
        parts.append(code if language == "bash" else f"python - <<'PYTHON'\n{code}PYTHON")
    return "\n".join(parts) + "\n"


def test_every_mark_is_on_a_block_and_the_venv_is_activated_first():
    text = README.read_text()
    blocks = BLOCK.findall(text)
    assert len(blocks) == text.count(MARK) >= 3
    assert blocks[0][1].startswith("source .venv/bin/activate\n")


def test_docs_name_graphviz_where_they_show_dag():
    docs = [README, REPO / "config" / "README.md", *(REPO / "docs").glob("*.md")]
    paragraphs = [p for doc in docs for p in doc.read_text().split("\n\n") if "--dag" in p]
    assert paragraphs and all("Graphviz" in p for p in paragraphs)


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A folder like the repository after `make demo`: its venv and examples, results/model and results/archive.zip."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    for name in (".venv", "examples"):
        (folder / name).symlink_to(REPO / name)
    make_checkpoint(folder / "results" / "model" / "model.ckpt", max_frames=40)
    shard = tmp_path / "shard.zip"
    assert main(["normalize", "--output", str(shard), str(EXAMPLES)]) == 0
    assert main(["archive", "--output", str(folder / "results" / "archive.zip"), str(shard)]) == 0
    return folder


@pytest.mark.slow
def test_readme_commands_run_in_a_fresh_shell(checkout, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(["bash", "-c", readme_script()], cwd=checkout, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    poses = sorted(p.relative_to(EXAMPLES).with_suffix("") for p in EXAMPLES.rglob("*.pose"))
    with (checkout / "codes.csv").open() as table:
        assert len(list(csv.DictReader(table))) == len(poses)
    for folder, suffix in (("codes", ".npy"), ("poses", ".pose"), ("poses-npy", ".pose")):
        assert sorted(p.relative_to(checkout / folder).with_suffix("") for p in (checkout / folder).rglob(f"*{suffix}")) == poses
    assert (checkout / "recon" / "essen.pose").is_file() and (checkout / "fixed" / "essen.pose").is_file()

"""The core install: `pip install sign-vq` alone (no extras) into a fresh venv runs inference on a trained model."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, REPO
from fixtures_model import trained  # noqa: F401 (fixture)
from sign_vq.model import load_model

NOT_CORE = ("lightning", "wandb", "snakemake", "google-cloud-storage", "opencv-python-headless", "matplotlib")


def pip(venv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "pip"), *args], capture_output=True, text=True)


@pytest.mark.slow
def test_core_install_runs_encode_and_reconstruct(trained, tmp_path):  # noqa: F811 (fixture)
    source = tmp_path / "src"  # what a source distribution holds; building here keeps the checkout clean
    shutil.copytree(REPO / "sign_vq", source / "sign_vq", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # the CPU wheel of torch lies on disk on our machines (pip's find-links); elsewhere any torch in range
    if pip(venv, "install", "-q", "torch==2.13.0").returncode:
        assert pip(venv, "install", "-q", "torch>=2.2,<3").returncode == 0
    installed = pip(venv, "install", "-q", str(source))
    assert installed.returncode == 0, installed.stderr[-2000:]
    listed = pip(venv, "list", "--format=freeze").stdout.lower()
    assert not [name for name in NOT_CORE if f"\n{name}==" in f"\n{listed}"], listed

    sign_vq = str(venv / "bin" / "sign-vq")
    version = subprocess.run([sign_vq, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("sign-vq ")
    recon = tmp_path / "recon"
    run = subprocess.run([sign_vq, "reconstruct", "--model", str(trained.model), "--output", str(recon),
                          str(EXAMPLES / "lexicon" / "essen.pose")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (recon / "essen.pose").stat().st_size > 0
    table = tmp_path / "codes.csv"
    run = subprocess.run([sign_vq, "encode", "--model", str(trained.model), "--output", str(table), str(EXAMPLES)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = list(csv.DictReader(table.open()))
    width = load_model(trained.model).num_codebooks
    assert len(rows) == len(trained.files) and all(len(r["codes"].split()) == width * int(r["frames"]) for r in rows)

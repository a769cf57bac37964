"""A repository anyone can use: the core install alone runs inference; a clean clone runs the real-data tests."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import CORPUS_ENV, EXAMPLES, REPO, STRICT_SKIPS_ENV, TEST_DATA
from sign_vq.model.checkpoint import load_model

NOT_CORE = ("lightning", "wandb", "snakemake", "google-cloud-storage", "opencv-python-headless", "matplotlib")


def pip(venv: Path, *args: str) -> subprocess.CompletedProcess:
    """This environment's pip acting on ``venv`` (made ``--without-pip``: no pip to install into it first)."""
    command = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), *args]
    return subprocess.run(command, capture_output=True, text=True)


def pip_install(venv: Path, *args: str) -> subprocess.CompletedProcess:
    """``pip install`` into ``venv``, not byte-compiling what it installs (Python compiles what it imports: a third of
    the install's time otherwise goes to torch's thousands of modules)."""
    return pip(venv, "install", "-q", "--no-compile", *args)


def assert_extras_named(sign_vq: str, tmp_path: Path) -> None:
    """On a core install, a stage of an extra shows its help and refuses to run with one line naming the extra."""
    listed = subprocess.run([sign_vq, "--help"], capture_output=True, text=True, check=True).stdout
    assert "[needs the train" in listed and "[needs the render" in listed
    flags = {"train": ["--archive", "a.zip", "--stats", "s.json"], "render": ["--model", "m", "--archive", "a.zip"],
             "sync": ["--bucket", "gs://b", "--lists", "l", "--shards", "1"]}
    for stage, rest in flags.items():
        subprocess.run([sign_vq, stage, "--help"], capture_output=True, check=True)
        run = subprocess.run([sign_vq, stage, *rest, "--output", str(tmp_path / stage)], capture_output=True, text=True)
        assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr[-2000:]
        assert run.stderr.strip().endswith(f"pip install 'sign-vq[{stage}]'"), run.stderr


@pytest.mark.slow
def test_core_install_runs_encode_and_reconstruct(trained, tmp_path):
    source = tmp_path / "src"  # what a source distribution holds; building here keeps the checkout clean
    shutil.copytree(REPO / "sign_vq", source / "sign_vq", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # the CPU wheel of torch lies on disk on our machines (pip's find-links); elsewhere any torch in range
    if pip_install(venv, "torch==2.13.0").returncode:
        assert pip_install(venv, "torch>=2.2,<3").returncode == 0
    installed = pip_install(venv, str(source))
    assert installed.returncode == 0, installed.stderr[-2000:]
    listed = f"\n{pip(venv, 'list', '--format=freeze').stdout.lower()}"
    assert "\nsign-vq==" in listed and "\ntorch==" in listed, listed
    assert not [name for name in NOT_CORE if f"\n{name}==" in listed], listed

    sign_vq = str(venv / "bin" / "sign-vq")
    version = subprocess.run([sign_vq, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("sign-vq ")
    assert_extras_named(sign_vq, tmp_path)
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
    assert len(rows) == len(trained.files) and all(len(r["codes"].split()) == width * int(r["length"]) for r in rows)


def test_the_sdist_is_the_package_without_the_tests(tmp_path):
    """The tests need the repository (examples, workflow, test data): the source distribution leaves them out."""
    source = tmp_path / "src"
    for name in ("sign_vq", "tests"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "data"))
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(REPO / name, source / name)
    build = "from setuptools import build_meta; print(build_meta.build_sdist('dist'))"
    built = subprocess.run([sys.executable, "-c", build], cwd=source, capture_output=True, text=True, check=True)
    with tarfile.open(source / "dist" / built.stdout.split()[-1]) as sdist:
        members = {name.partition("/")[2] for name in sdist.getnames()}
    assert "sign_vq/cli.py" in members and "sign_vq/config.schema.yaml" in members
    assert not [name for name in members if name.startswith("tests")]


def test_make_test_says_why_tests_were_skipped():
    recipes = re.findall(r"(?m)^(test|test-fast): .*\n\t(.*)$", (REPO / "Makefile").read_text())
    assert [name for name, _ in recipes] == ["test", "test-fast"]
    assert all("pytest" in line and " -rs " in line for _, line in recipes)


def test_git_ignores_run_and_build_outputs():
    paths = ["results/x", "results-mine/model/model.ckpt", "build/lib/x.py", "dist/sign_vq-0.1.0.tar.gz"]
    ignored = subprocess.run(["git", "check-ignore", *paths], cwd=REPO, capture_output=True, text=True).stdout
    assert ignored.split() == paths


# tests that read real pose files (test_inference and test_render too, after training a model: left out for time)
DATA_TESTS = ["test_preprocess.py", "test_normalize.py", "test_sync.py", "test_shards.py", "test_quality_bounds.py",
              "test_cli.py", "test_api.py"]


def test_test_data_is_in_the_repository_and_small(data_dir):
    inside = [p for root in (EXAMPLES, TEST_DATA) for p in root.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in inside) <= 10 * 2**20
    assert all("MIT" in (root.parent / "README.md").read_text() for root in (EXAMPLES, TEST_DATA))  # attribution
    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("*.pose")) == sorted(
        p.relative_to(root) for root in (EXAMPLES, TEST_DATA) for p in root.rglob("*.pose"))


@pytest.mark.slow
def test_a_clean_clone_skips_only_the_corpus_sweeps(tmp_path):
    """A clone with nothing beside it (committed files only): the tests of real data run; only corpus sweeps skip."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k != CORPUS_ENV} | {STRICT_SKIPS_ENV: "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "not slow", "-p", "no:cacheprovider"]
    run = subprocess.run([*command, *[f"tests/{name}" for name in DATA_TESTS]], cwd=clone, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:]
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skipped and all("corpus sweep:" in line for line in skipped), skipped

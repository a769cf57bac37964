"""The workflow deployed into another project as docs/deploy.md says: `snakedeploy deploy-workflow` from a local checkout,
the module's path set to the checkout, a dry run from the project folder; the workflow catalog's usage file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLES, REPO

BIN = Path(sys.executable).parent
CHECKOUT = ("workflow", "config", "profiles", "sign_vq", "LICENSE", "pyproject.toml")  # what a deployment reads


def test_catalog_usage_names_the_flags_software_and_report():
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert usage["mandatory-flags"]["flags"] == "--profile profiles/local"
    assert usage["software-stack-deployment"]["conda"] is True and usage["report"] is True
    assert all((REPO / path).exists() for path in ("workflow/Snakefile", "config/README.md", "profiles/local"))


@pytest.mark.slow
def test_snakedeploy_from_a_local_checkout_plans_the_workflow(tmp_path):
    checkout, project = tmp_path / "sign-vq", tmp_path / "my-project"
    for name in CHECKOUT:  # a checkout without its venv and results (snakedeploy copies the whole folder)
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, checkout / name)
    deploy = [BIN / "snakedeploy", "deploy-workflow", checkout, project, "--branch", "main", "--name", "sign_vq"]
    subprocess.run(deploy, capture_output=True, check=True)
    snakefile = project / "workflow" / "Snakefile"
    text = snakefile.read_text()
    assert "module sign_vq:" in text and "use rule * from sign_vq" in text
    assert '"workflow/Snakefile"' in text  # snakedeploy 0.17's path for a local checkout: docs/deploy.md says to fix it
    snakefile.write_text(text.replace('"workflow/Snakefile"', f'"{checkout}/workflow/Snakefile"'))
    config = project / "config" / "config.yaml"
    config.write_text(config.read_text().replace("local_dir: examples/poses", f"local_dir: {EXAMPLES}"))
    run = subprocess.run([BIN / "snakemake", "-n", "--profile", "profiles/local"], cwd=project, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    planned = run.stdout + run.stderr
    assert all(f"rule {rule}:" in planned for rule in ("normalize", "stats", "archive", "train", "render"))

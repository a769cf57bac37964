"""Model folders in the Hugging Face hub's layout: `sign-vq export` and loading back (a folder, or `org/name` through
huggingface_hub's cache, offline) give exactly the checkpoint's codes; foreign files are refused in one line."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sign_vq
from conftest import EXAMPLES
from fixtures_model import make_checkpoint
from sign_vq.cli import main
from sign_vq.errors import UserError
from sign_vq.model import hub
from sign_vq.model.card import export
from sign_vq.model.checkpoint import load_model

FILES = sorted(EXAMPLES.rglob("*.pose"))


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("exported") / "model"
    assert main(["export", "--model", str(trained.model), "--output", str(folder), "--license", "cc-by-nc-sa-4.0",
                 "--data", "the bundled examples"]) == 0
    return folder


def test_an_exported_folder_gives_the_checkpoints_codes(trained, exported, tmp_path):
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    original, loaded = load_model(trained.model), sign_vq.load(exported)
    assert original.state_dict().keys() == loaded.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in original.state_dict().items())
    for codes, again in zip(sign_vq.encode(original, FILES), sign_vq.encode(loaded, FILES)):
        assert np.array_equal(codes, again)
    for name, model in (("ckpt", trained.model), ("folder", exported)):
        assert main(["encode", "--model", str(model), "--output", str(tmp_path / f"{name}.csv"), str(EXAMPLES)]) == 0
    assert (tmp_path / "ckpt.csv").read_bytes() == (tmp_path / "folder.csv").read_bytes()


def test_the_config_and_card_describe_the_model(exported):
    config = json.loads((exported / "config.json").read_text())
    assert sorted(config) == sorted(hub.CONFIG_KEYS) and np.array(config["mean"]).shape == (178, 3)
    card = (exported / "README.md").read_text()
    bits = load_model(exported).bits_per_frame
    assert card.startswith("---\nlicense: cc-by-nc-sa-4.0\n") and f"**{bits:.2f} bits per frame**" in card
    assert "the bundled examples" in card and "sign_vq.load(" in card and "## Intended use and limits" in card


def test_the_card_shows_the_validation_metrics_of_the_training_folder(tmp_path):
    make_checkpoint(tmp_path / "run" / "model.ckpt")
    (tmp_path / "run" / "metrics.csv").write_text(
        "step,train/loss,val/loss,val/mse,val/codebook_utilization\n10,0.5,,,\n20,,0.25,0.125,0.5\n30,0.2,,,\n")
    card = (export(tmp_path / "run", tmp_path / "out") / "README.md").read_text()
    assert "at step 20" in card and "| 0.25 |" in card and "| 0.125 |" in card
    assert "(`val/codebook_utilization`) | 0.5 |" in card


def hub_cache(folder: Path, cache: Path, repo_id: str) -> None:
    """A Hugging Face hub cache holding ``folder`` as ``repo_id``'s main revision (the cache layout the hub's
    documentation describes: blobs by hash, snapshots/<commit>/ links to them, refs/main naming the commit)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for file in folder.iterdir():
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        (repo / "blobs" / blob).write_bytes(file.read_bytes())
        (repo / "snapshots" / commit / file.name).symlink_to(Path("../../blobs") / blob)


def test_an_org_name_loads_from_the_hub_cache_offline(trained, exported, tmp_path):
    pytest.importorskip("huggingface_hub")
    hub_cache(exported, tmp_path / "cache", "sign-org/tiny-vq")
    probe = (
        "import sys, numpy as np, sign_vq\nfrom sign_vq.cli import main\n"
        f"model = sign_vq.load('sign-org/tiny-vq')\n"
        f"np.save({str(tmp_path / 'codes.npy')!r}, sign_vq.encode(model, {str(FILES[0])!r}))\n"
        f"sys.exit(main(['encode', '--model', 'sign-org/tiny-vq', '--output', {str(tmp_path / 'hub.csv')!r}, "
        f"{str(EXAMPLES)!r}]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert np.array_equal(np.load(tmp_path / "codes.npy"), sign_vq.encode(load_model(trained.model), FILES[0]))
    assert main(["encode", "--model", str(exported), "--output", str(tmp_path / "local.csv"), str(EXAMPLES)]) == 0
    assert (tmp_path / "hub.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    missing = subprocess.run([sys.executable, "-c", "import sign_vq; sign_vq.load('sign-org/absent')"], env=env,
                             capture_output=True, text=True)
    assert "sign-org/absent: no such file or folder here, and the Hugging Face hub gave no model" in missing.stderr


def test_an_org_name_without_huggingface_hub_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(UserError, match=r"pip install 'sign-vq\[hub\]'"):
        sign_vq.load("sign-org/tiny-vq")


@pytest.fixture
def folder(tmp_path) -> Path:
    return export(make_checkpoint(tmp_path / "m.ckpt"), tmp_path / "folder")


def _edit_config(folder: Path, change) -> Path:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder / "config.json"


@pytest.mark.parametrize("change, problem", [
    (lambda c: c.update(extra=1), "expected exactly model_type"),
    (lambda c: c.update(format_version="1"), "key format_version = '1': expected int"),
    (lambda c: c.update(model_type="other"), "this sign-vq reads 'sign-vq-fsq'"),
    (lambda c: c["train"].update(lr="fast"), "train.lr"),
    (lambda c: c["train"]["model"].update(colour=3), "unknown config key train.model.colour"),
    (lambda c: c["mean"].pop(), "key mean must be 178 rows of 3 finite numbers"),
    (lambda c: c["std"][0].__setitem__(0, "1"), "key std must be 178 rows of 3 finite numbers"),
])
def test_a_foreign_config_is_refused_naming_the_file(folder, change, problem):
    path = _edit_config(folder, change)
    with pytest.raises(UserError) as error:
        load_model(folder)
    assert str(error.value).startswith(str(path)) and problem in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("text, problem", [
    ('{"mean": NaN}', "NaN is not a number"), ('{"a": 1, "a": 2}', "key 'a' given twice"), ("[", "JSONDecodeError"),
])
def test_a_config_that_is_not_plain_json_is_refused(folder, text, problem):
    (folder / "config.json").write_text(text)
    with pytest.raises(UserError, match=problem):
        load_model(folder)


def test_a_safetensors_file_with_anything_but_tensors_is_refused(folder):
    from safetensors.torch import save_file

    weights = folder / "model.safetensors"
    state = hub.read_weights(weights)
    save_file(state, str(weights), metadata={"format": "pt", "code": "import os"})
    with pytest.raises(UserError, match="carries metadata") as error:
        load_model(folder)
    assert str(error.value).startswith(str(weights))
    torch.save({"state": state, "run": print}, weights)  # a pickle named like the weights
    with pytest.raises(UserError, match="not a safetensors file of weights") as error:
        load_model(folder)
    assert str(error.value).startswith(str(weights))
    save_file({**state, "head.1.bias": torch.full_like(state["head.1.bias"], float("nan"))}, str(weights),
              metadata={"format": "pt"})
    with pytest.raises(UserError, match="non-finite"):
        load_model(folder)


def test_export_refuses_a_folder_that_is_not_a_model_folder_and_a_bad_license(folder, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a sign-vq model folder"):
        export(folder, tmp_path / "busy")
    with pytest.raises(UserError, match="--license"):
        export(folder, tmp_path / "new", license_id="MIT\nevil: 1")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert export(folder, folder) == folder and load_model(folder).num_codebooks == 1  # a model folder is replaced

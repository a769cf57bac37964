"""The configuration check: every number bounded and finite, what the model needs, safe bucket names and paths.

Each bad value is refused by `sign_vq.config.validate` with one line naming the key (the workflow shows that line and
runs no job: tests/test_workflow.py).
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from sign_vq.config import (
    MAX_YAML_NODES,
    Config,
    as_dict,
    load_config,
    read_yaml,
    schema,
    train_config,
    typed,
    validate,
)
from sign_vq.errors import UserError


def numeric_keys(node: dict, prefix: str = "") -> list[tuple[str, dict]]:
    keys = []
    for key, child in node.get("properties", {}).items():
        if child.get("type") in ("number", "integer"):
            keys.append((f"{prefix}{key}", child))
        elif child.get("type") == "array" and child["items"].get("type") in ("number", "integer"):
            keys.append((f"{prefix}{key}[]", child["items"]))
        keys.extend(numeric_keys(child, f"{prefix}{key}."))
    return keys


def nested(key: str, value) -> dict:
    """{"a": {"b": value}} for "a.b"."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def refused(config: dict) -> str:
    with pytest.raises(UserError) as error:
        validate(config, "my.yaml")
    message = str(error.value)
    assert "\n" not in message and message.startswith("my.yaml: config key ")
    return message


def test_every_numeric_key_has_a_range():
    unbounded = [
        key for key, node in numeric_keys(schema())
        if not ({"minimum", "exclusiveMinimum"} & set(node) and {"maximum", "exclusiveMaximum"} & set(node))
    ]
    assert unbounded == []


@pytest.mark.parametrize("key", ["train.lr", "train.augment.shape", "normalize.outlier_limit", "archive.val_fraction"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(key, value):
    message = refused(nested(key, value))
    assert key in message and ("finite" in message or "maximum" in message or "minimum" in message)


@pytest.mark.parametrize(
    ("key", "value", "limit"),
    [
        ("train.lr", 1e30, "maximum 1"),
        ("train.lr", 0, "exclusiveMinimum 0"),
        ("archive.val_fraction", 1, "exclusiveMaximum 1"),
        ("archive.val_fraction", -0.1, "minimum 0"),
        ("train.seed", -1, "minimum 0"),
        ("train.model.dropout", 1.0, "exclusiveMaximum 1"),
        ("input.num_shards", 0, "minimum 1"),
    ],
)
def test_out_of_range_numbers_name_the_key_and_the_limit(key, value, limit):
    message = refused(nested(key, value))
    assert key in message and limit in message


def test_zero_validation_fraction_and_whole_floats_for_integers_are_accepted():
    config = validate({"archive": {"val_fraction": 0}, "train": {"max_steps": 300.0}})
    assert config["train"]["max_steps"] == 300 and isinstance(config["train"]["max_steps"], int)


def test_heads_must_divide_d_model():
    message = refused({"train": {"model": {"d_model": 10, "heads": 4}}})
    assert "train.model.heads = 4" in message and "must divide train.model.d_model (10)" in message


def test_static_dims_must_leave_code_dimensions_for_motion():
    message = refused({"train": {"model": {"levels": [8, 5], "num_codebooks": 1, "static_dims": 2}}})
    assert "train.model.static_dims = 2" in message and "below num_codebooks x len(levels) = 2" in message


def test_some_part_weight_must_be_positive():
    zero = {part: 0 for part in ("body", "face", "left_hand", "right_hand")}
    message = refused({"train": {"loss": {"part_weights": zero}}})
    assert "train.loss.part_weights" in message and "at least one part weight" in message
    assert validate({"train": {"loss": {"part_weights": {**zero, "face": 0.5}}}})


@pytest.mark.parametrize(
    "bucket", ["", "gs://abc", "gs://my-bucket.name_1", "gs://sign-vq/poses/2024", "gs://b-1/a prefix/with spaces"]
)
def test_valid_buckets_are_accepted(bucket):
    assert validate({"input": {"bucket": bucket}})["input"]["bucket"] == bucket


@pytest.mark.parametrize(
    "bucket",
    ["gs://ab", "gs://" + "a" * 64, "gs://ABC", "gs://-abc", "gs://abc-", "s3://abc", "abc", "gs://abc/x\nrm", "gs://a b"],
)
def test_invalid_buckets_are_refused_with_the_expected_form(bucket):
    message = refused({"input": {"bucket": bucket}})
    assert "input.bucket" in message
    assert "gs://BUCKET[/PREFIX]" in message or "control characters" in message


@pytest.mark.parametrize("path", ["out dir/résultats", "out$(touch pwned)", "in;touch pwned;x", "/abs/path", "./-x"])
def test_paths_with_spaces_unicode_and_shell_characters_are_accepted(path):
    config = validate({"results": path, "input": {"local_dir": path, "mirror_dir": path}})
    assert config["results"] == config["input"]["local_dir"] == path


@pytest.mark.parametrize("key", ["results", "input.local_dir", "input.mirror_dir"])
@pytest.mark.parametrize("path", ["-rf", "a{shard}b", "tab\there", "line\n", ""])
def test_paths_that_cannot_be_output_patterns_or_arguments_are_refused(key, path):
    message = refused(nested(key, path))
    assert key in message


def test_the_typed_config_holds_every_key_of_the_schema_and_gives_it_back():
    shipped = validate(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), "config/config.yaml")
    config = typed(Config, shipped)
    assert as_dict(config) == shipped, "a schema key without a field (or the reverse)"
    assert config.train.model.levels == tuple(shipped["train"]["model"]["levels"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.lr = 1.0  # type: ignore[misc]
    assert train_config({"lr": 0.002}).lr == 0.002 and train_config().lr == shipped["train"]["lr"]


# --- the YAML files themselves: alias bombs, duplicate keys, binary files (issue 21: 3, 10, 11) ---------------------


def alias_bomb(path: Path, mapping: bool, width: int = 9, depth: int = 6) -> Path:
    """A ~0.5 KB YAML file whose nested aliases expand to width**depth values (531,441 by default) under `train`."""
    def value(child: str) -> str:
        keys = "abcdefghijklmnop"[:width]
        return "{" + ", ".join(f"{k}: {child}" for k in keys) + "}" if mapping else f"[{', '.join([child] * width)}]"

    lines = [f"a0: &a0 {value('lol')}"] + [f"a{i}: &a{i} {value(f'*a{i - 1}')}" for i in range(1, depth)]
    path.write_text("\n".join([*lines, f"train: *a{depth - 1}", ""]))
    return path


def load_refused(path: Path) -> str:
    with pytest.raises(UserError) as error:
        load_config(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


@pytest.mark.parametrize("mapping", [False, True], ids=["lists", "mappings"])
def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path, mapping):
    message = load_refused(alias_bomb(tmp_path / "bomb.yaml", mapping))
    assert f"expand to more than {MAX_YAML_NODES} values" in message


def test_anchors_aliases_and_merge_keys_within_the_bound_are_read(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("levels: &levels [8, 5, 5, 5]\ntrain:\n  model: &m {levels: *levels}\nrender:\n  <<: {gif: true}\n")
    assert read_yaml(path) == {"levels": [8, 5, 5, 5], "train": {"model": {"levels": [8, 5, 5, 5]}},
                               "render": {"gif": True}}
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("train: &t [*t]\n")
    assert "aliases" in load_refused(recursive)


def test_a_duplicate_key_is_refused_naming_it_and_both_lines(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("train:\n  max_steps: 300\n  lr: 0.001\n  max_steps: 5\n")
    assert load_refused(path) == f"{path}: duplicate config key 'max_steps' at lines 2 and 4; keep only one"


def test_a_binary_config_file_is_one_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    assert "not a text file" in load_refused(path)


def test_the_workflow_refuses_a_bomb_or_a_duplicate_key_in_its_config_files(tmp_path):
    """Snakemake expands `configfile:` and the config checks walk the expansion: workflow/Snakefile checks first."""
    (tmp_path / "default" / "config").mkdir(parents=True)
    (tmp_path / "default" / "config" / "config.yaml").write_text("results: a\nresults: b\n")
    (tmp_path / "given").mkdir()
    bomb = alias_bomb(tmp_path / "bomb.yaml", mapping=False)
    for workdir, extra, expected in (
        ("default", (), "config/config.yaml: duplicate config key 'results' at lines 1 and 2"),
        ("given", ("--configfile", str(bomb)), f"{bomb}: YAML aliases (*name) expand to more than"),
    ):
        result = subprocess.run(
            [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "workflow" / "Snakefile"),
             "--dry-run", "--cores", "1", *extra],
            cwd=tmp_path / workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
        )
        assert result.returncode != 0 and expected in result.stdout, result.stdout[-2000:]

"""The configuration check: every number bounded and finite, what the model needs, safe bucket names and paths.

Each bad value is refused by `sign_vq.config.validate` with one line naming the key (the workflow shows that line and
runs no job: tests/test_workflow.py).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import yaml

from sign_vq.config import Config, as_dict, schema, train_config, typed, validate
from sign_vq.errors import UserError

from conftest import REPO


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

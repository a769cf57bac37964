"""The validated configuration: one JSON Schema (`config.schema.yaml`) for the workflow and the library.

Unknown keys are rejected and wrong types named with their allowed values; missing keys get the schema's defaults.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from sign_vq.errors import UserError


@functools.cache
def schema() -> dict:
    """The configuration schema shipped with the package."""
    return yaml.safe_load(resources.files("sign_vq").joinpath("config.schema.yaml").read_text())


def _subschema(path: list) -> dict:
    node = schema()
    for key in path:
        if isinstance(key, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(key, {})
    return node


def _describe(error: jsonschema.ValidationError, source: str) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(_subschema(list(error.absolute_path)).get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(f"{where + '.' if where else ''}{k}" for k in unknown)
        return f"{source}: unknown config key {keys}; allowed keys here: {', '.join(allowed)}"
    node = error.schema
    allowed = node.get("enum")
    expected = f"one of {allowed}" if allowed else f"{node.get('type', 'valid')}"
    limits = [f"{k} {node[k]}" for k in ("minimum", "maximum", "exclusiveMinimum", "pattern", "minItems") if k in node]
    hint = f" ({', '.join(limits)})" if limits else ""
    return f"{source}: config key {where or '(top level)'} = {error.instance!r} is invalid: expected {expected}{hint}"


def _fill_defaults(node: dict, value: Any) -> Any:
    if node.get("type") != "object" or not isinstance(value, dict):
        return value
    for key, child in node.get("properties", {}).items():
        if key not in value and "default" in child:
            value[key] = copy.deepcopy(child["default"])
        if key in value:
            value[key] = _fill_defaults(child, value[key])
    return value


def validate(config: dict | None, source: str = "config") -> dict:
    """Check ``config`` against the schema and return a copy with every default filled in."""
    config = copy.deepcopy(config or {})
    if not isinstance(config, dict):
        raise UserError(f"{source}: the configuration must be a mapping of keys, got {type(config).__name__}")
    validator = jsonschema.Draft7Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        raise UserError(_describe(errors[0], source))
    return _fill_defaults(schema(), config)


def load_config(path: str | Path | None) -> dict:
    """Read a YAML config (None = all defaults) and validate it."""
    if path is None:
        return validate({}, "defaults")
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UserError(f"{path}: cannot read the config ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error})") from None
    return validate(data, str(path))

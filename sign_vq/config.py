"""The validated configuration: one JSON Schema (`config.schema.yaml`) for the workflow and the library.

Unknown keys are rejected and wrong types named with their allowed values; missing keys get the schema's defaults.
Beyond the schema: every number must be finite, no text may hold control characters, and the model must be buildable
(heads divide d_model, some part weight > 0, static dims below the code dimensions, one codebook under a residual
or per-part quantizer) — all checked before any job.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import re
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator

import jsonschema
import yaml

from sign_vq.errors import UserError

MAX_YAML_NODES = 100_000  # values a YAML document may expand to (a config holds a few hundred)
MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a mapping's duplicate keys (instead of keeping the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = None if key_node.tag == MERGE_TAG else self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable) or key is None:  # `<<: *base` merges; super() refuses lists
                continue
            line = key_node.start_mark.line + 1
            if key in lines:
                raise UserError(
                    f"{self.name}: duplicate config key {key!r} at lines {lines[key]} and {line}; keep only one"
                )
            lines[key] = line
        return super().construct_mapping(node, deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int | None]) -> int:
    """How many values ``node`` becomes once its aliases are expanded (``sizes``: memo by node; a recursive alias
    counts as too many)."""
    if isinstance(node, yaml.ScalarNode):
        return 1
    if id(node) in sizes:
        return sizes[id(node)] if sizes[id(node)] is not None else MAX_YAML_NODES + 1
    sizes[id(node)] = None  # in progress: meeting it again means the node contains itself
    children = [part for item in node.value for part in (item if isinstance(item, tuple) else (item,))]
    sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` safely (``source`` names it in errors): duplicate keys and aliases that would expand past
    :data:`MAX_YAML_NODES` values (an alias bomb) are refused before the document is built."""
    loader = _StrictLoader(text)
    loader.name = source
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
            raise UserError(
                f"{source}: YAML aliases (*name) expand to more than {MAX_YAML_NODES} values; "
                "write the values out instead of nesting aliases"
            )
        return None if node is None else loader.construct_document(node)
    except yaml.YAMLError as error:
        raise UserError(f"{source}: not valid YAML ({error})") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> Any:
    """The YAML file ``path`` parsed with :func:`load_yaml`; unreadable or non-UTF-8 files are a UserError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UserError(f"{path}: cannot read the config ({error.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (not UTF-8); expected a YAML config") from None
    return load_yaml(text, str(path))


def check_config_files(paths: Iterable[str | Path]) -> None:
    """Parse each existing config file with :func:`read_yaml` (the workflow calls this before Snakemake reads them,
    which would expand an alias bomb)."""
    for path in paths:
        if Path(path).is_file():
            read_yaml(path)


@functools.cache
def schema() -> dict:
    """The configuration schema shipped with the package."""
    return load_yaml(resources.files("sign_vq").joinpath("config.schema.yaml").read_text(), "config.schema.yaml")


def default(key: str) -> Any:
    """The schema's default of a dotted key (``"render.num_poses"``): the one place a default is written."""
    return _subschema(key.split("."))["default"]


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
    if "errorMessage" in node and error.validator == "pattern":
        return _invalid(source, where, error.instance, f"expected {node['errorMessage']}")
    expected = f"one of {allowed}" if allowed else f"{node.get('type', 'valid')}"
    limits = [f"{k} {node[k]}" for k in LIMITS if k in node]
    hint = f" ({', '.join(limits)})" if limits else ""
    return _invalid(source, where or "(top level)", error.instance, f"expected {expected}{hint}")


LIMITS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern", "minItems", "maxItems")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _invalid(source: str, key: str, value: Any, reason: str) -> str:
    return f"{source}: config key {key} = {value!r} is invalid: {reason}"


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every scalar in ``value`` (list items as ``key[i]``)."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _leaves(child, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _leaves(child, f"{path}[{index}]")
    else:
        yield path, value


def _check_values(config: dict, source: str) -> None:
    """Numbers finite (NaN passes every schema range), text free of control characters (a newline passes `$`)."""
    for key, value in _leaves(config):
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(_invalid(source, key, value, "expected a finite number"))
        if isinstance(value, str) and CONTROL.search(value):
            raise UserError(_invalid(source, key, value, "control characters (newline, tab, ...) are not allowed"))


def _check_model(train: dict, source: str) -> None:
    """What building and training the model needs beyond each key's own range."""
    model, weights = train["model"], train["loss"]["part_weights"]
    if model["d_model"] % model["heads"]:
        raise UserError(_invalid(
            source, "train.model.heads", model["heads"], f"must divide train.model.d_model ({model['d_model']})"
        ))
    if model["quantizer"] in ("residual", "parts") and model["num_codebooks"] != 1:
        codes = "train.model.num_quantizers codes" if model["quantizer"] == "residual" else "one code per part"
        raise UserError(_invalid(
            source, "train.model.num_codebooks", model["num_codebooks"],
            f"must be 1 with train.model.quantizer: {model['quantizer']} (it has {codes} per frame)",
        ))
    if model["quantizer"] == "parts" and model["static_dims"] >= len(model["part_levels"]["body"]):
        raise UserError(_invalid(
            source, "train.model.static_dims", model["static_dims"],
            f"must be below len(train.model.part_levels.body) = {len(model['part_levels']['body'])} with "
            "train.model.quantizer: parts (the body's last dimensions carry the static channel)",
        ))
    codes = "num_quantizers" if model["quantizer"] == "residual" else "num_codebooks"
    code_dims = model[codes] * len(model["levels"])
    if model["quantizer"] != "parts" and model["static_dims"] >= code_dims:
        raise UserError(_invalid(
            source, "train.model.static_dims", model["static_dims"],
            f"must be below {codes} x len(levels) = {code_dims} (0 = off)",
        ))
    if not any(weight > 0 for weight in weights.values()):
        raise UserError(_invalid(
            source, "train.loss.part_weights", weights, "at least one part weight must be above 0"
        ))


def _fill_defaults(node: dict, value: Any) -> Any:
    """Missing keys take their defaults; whole floats given for integer keys (`300.0`) become ints."""
    if node.get("type") == "integer" and isinstance(value, float):
        return int(value)
    if node.get("type") == "array" and isinstance(value, list):
        return [_fill_defaults(node.get("items", {}), item) for item in value]
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
    _check_values(config, source)
    config = _fill_defaults(schema(), config)
    if "train" in config:
        _check_model(config["train"], source)
    return config


# --- the typed configuration, built once from a validated dict and passed down ------------------------------------
def _schedule() -> Any:
    """Marks a `train` key that changes how long and where a run trains, not what it learns."""
    return dataclasses.field(metadata={"schedule": True})


@dataclass(frozen=True)
class ModelConfig:
    d_model: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    ff_mult: int
    dropout: float
    levels: tuple[int, ...]
    num_codebooks: int
    quantizer: str
    num_quantizers: int
    quantize_dropout: float
    static_dims: int
    part_levels: dict[str, list[int]]


@dataclass(frozen=True)
class LossConfig:
    part_weights: dict[str, float]
    relative_parts: bool
    velocity_weight: float


@dataclass(frozen=True)
class AugmentConfig:
    shape: float
    scale: float
    rotate: float
    shift: float


@dataclass(frozen=True)
class WandbConfig:
    mode: str
    project: str
    entity: str


@dataclass(frozen=True)
class TrainConfig:
    """The `train` section; fields marked ``_schedule()`` change how long and where a run trains, not what it learns
    (a changed one resumes the run, see :mod:`sign_vq.training.runs`)."""

    seed: int
    max_steps: int = _schedule()
    batch_size: int
    max_frames: int
    lr: float
    warmup_steps: int
    weight_decay: float
    precision: str = _schedule()
    accelerator: str = _schedule()
    devices: int = _schedule()
    num_nodes: int = _schedule()
    num_workers: int = _schedule()
    augment: AugmentConfig
    checkpoint_every: int = _schedule()
    keep_every: int = _schedule()
    log_every: int = _schedule()
    val_every: int = _schedule()
    render_every: int = _schedule()
    model: ModelConfig
    loss: LossConfig
    wandb: WandbConfig = _schedule()


@dataclass(frozen=True)
class InputConfig:
    bucket: str
    local_dir: str
    mirror_dir: str
    num_shards: int
    threads: int
    delete_removed: bool


@dataclass(frozen=True)
class NormalizeConfig:
    max_bad_fraction: float
    outlier_limit: float
    correct_wrists: bool


@dataclass(frozen=True)
class ArchiveConfig:
    val_fraction: float


@dataclass(frozen=True)
class RenderConfig:
    num_poses: int
    metric_poses: int
    max_frames: int
    gif: bool


@dataclass(frozen=True)
class Config:
    results: str
    input: InputConfig
    normalize: NormalizeConfig
    archive: ArchiveConfig
    train: TrainConfig
    render: RenderConfig


def schedule_keys() -> frozenset[str]:
    """The `train` keys marked ``_schedule()``: a changed one resumes the run."""
    return frozenset(field.name for field in dataclasses.fields(TrainConfig) if field.metadata.get("schedule"))


Section = typing.TypeVar("Section")


def typed(kind: type[Section], values: dict) -> Section:
    """A validated dict (or one of its sections) as its frozen dataclass; lists become tuples."""
    hints = typing.get_type_hints(kind)
    fields = {}
    for field in dataclasses.fields(kind):
        value, hint = values[field.name], hints[field.name]
        if dataclasses.is_dataclass(hint):
            value = typed(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        fields[field.name] = value
    return kind(**fields)


def as_dict(section: Any) -> dict:
    """A typed config (or section) as the plain JSON-like dict it was built from (for files and checkpoints)."""
    return json.loads(json.dumps(dataclasses.asdict(section)))


def train_config(overrides: dict | None = None, source: str = "train config") -> TrainConfig:
    """The validated, typed `train` section: the defaults with ``overrides`` (a partial `train` section)."""
    return typed(TrainConfig, validate({"train": overrides or {}}, source)["train"])


def load_config(path: str | Path | None) -> Config:
    """Read a YAML config (None = all defaults), validate it and return it typed."""
    if path is None:
        return typed(Config, validate({}, "defaults"))
    return typed(Config, validate(read_yaml(path), str(path)))

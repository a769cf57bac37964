"""Every default of a config key is written once, in the schema: library functions, the model and the CLI flags
take theirs from it (`sign_vq.config.default`) or have none."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sign_vq.cli import build_parser
from sign_vq.config import default, schema

PACKAGE = Path(__file__).resolve().parents[1] / "sign_vq"
# parameter names that are schema keys by coincidence: (file, name) -> what they mean there
UNRELATED = {("fileio.py", "mode"): "a file's open mode, not train.wandb.mode"}


def schema_keys(node: dict | None = None) -> set[str]:
    """The last part of every leaf key of the schema (``threads`` for ``input.threads``)."""
    node = schema() if node is None else node
    properties = node.get("properties")
    if not properties:
        return set()
    return {name for key, child in properties.items() for name in (schema_keys(child) or {key})}


def _literal_names(tree: ast.Module) -> set[str]:
    """Module-level names bound to a literal (``THREADS = 8``)."""
    return {target.id for node in tree.body if isinstance(node, ast.Assign) and _is_literal(node.value, set())
            for target in node.targets if isinstance(target, ast.Name)}


def _is_literal(value: ast.expr, literal_names: set[str]) -> bool:
    if isinstance(value, ast.Constant):
        return value.value is not None
    if isinstance(value, (ast.Tuple, ast.List)):
        return bool(value.elts) and all(_is_literal(item, literal_names) for item in value.elts)
    if isinstance(value, ast.UnaryOp):
        return _is_literal(value.operand, literal_names)
    name = value.attr if isinstance(value, ast.Attribute) else getattr(value, "id", None)
    return name in literal_names


def _parameter_defaults(function: ast.FunctionDef) -> list[tuple[str, ast.expr]]:
    arguments = function.args
    positional = arguments.posonlyargs + arguments.args
    pairs = list(zip(positional[len(positional) - len(arguments.defaults):], arguments.defaults))
    pairs += [(arg, value) for arg, value in zip(arguments.kwonlyargs, arguments.kw_defaults) if value is not None]
    return [(arg.arg, value) for arg, value in pairs]


def _flag_defaults(call: ast.Call) -> list[tuple[str, ast.expr]]:
    flags = [arg.value for arg in call.args if isinstance(arg, ast.Constant) and str(arg.value).startswith("--")]
    return [(flags[0][2:].replace("-", "_"), keyword.value) for keyword in call.keywords
            if keyword.arg == "default" and flags]


def written_defaults(source: str, keys: set[str], literal_names: set[str] = frozenset()) -> list[str]:
    """``name = literal`` defaults of parameters and `--flags` named like a config key, in ``source``."""
    tree = ast.parse(source)
    literal_names = set(literal_names) | _literal_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            pairs = _parameter_defaults(node)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            pairs = _flag_defaults(node)
        else:
            continue
        found += [f"{name} = {ast.unparse(value)} (line {node.lineno})" for name, value in pairs
                  if name in keys and _is_literal(value, literal_names)]
    return found


def test_the_checker_finds_a_default_written_again():
    source = ("THREADS = 8\ndef sync(threads=THREADS, *, gif=True, bucket=None): ...\n"
              "def flags(p):\n    p.add_argument('--num-poses', type=int, default=4)\n"
              "    p.add_argument('--max-frames', default=default('render.max_frames'))\n")
    assert written_defaults(source, {"threads", "gif", "bucket", "num_poses", "max_frames"}) == [
        "threads = THREADS (line 2)", "gif = True (line 2)", "num_poses = 4 (line 4)"]


def test_no_config_default_is_written_twice_in_the_package():
    keys = schema_keys()
    assert {"threads", "static_dims", "val_fraction", "num_poses", "gif"} <= keys
    sources = {path: path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}
    constants = set().union(*(_literal_names(ast.parse(text)) for text in sources.values()))
    found = []
    for path, text in sources.items():
        unrelated = {name for (file, name) in UNRELATED if file == path.name}
        found += [f"{path.relative_to(PACKAGE)}: {line}" for line in written_defaults(text, keys - unrelated, constants)]
    assert found == [], "defaults written beside the schema's (use sign_vq.config.default):\n" + "\n".join(found)


@pytest.mark.parametrize("argv, flag, key", [
    (["sync", "--bucket", "gs://b", "--output", "m", "--lists", "l", "--shards", "1"], "threads", "input.threads"),
    (["normalize", "--output", "s.zip", "a.pose"], "max_bad_fraction", "normalize.max_bad_fraction"),
    (["normalize", "--output", "s.zip", "a.pose"], "outlier_limit", "normalize.outlier_limit"),
    (["archive", "--output", "a.zip", "s.zip"], "val_fraction", "archive.val_fraction"),
    (["render", "--model", "m", "--archive", "a.zip", "--output", "o"], "num_poses", "render.num_poses"),
    (["render", "--model", "m", "--archive", "a.zip", "--output", "o"], "max_frames", "render.max_frames"),
    (["render", "--model", "m", "--archive", "a.zip", "--output", "o"], "metric_poses", "render.metric_poses"),
])
def test_a_flag_left_out_takes_the_schema_default(argv, flag, key):
    assert getattr(build_parser(argv[0]).parse_args(argv), flag) == default(key)

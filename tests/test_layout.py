"""The package's shape (docs/development.md#layout): layers that import only downwards, thin stages, small modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sign_vq"
# each layer imports only from itself and the layers before it
LAYERS = [
    {"errors", "fileio", "config"},
    {"poses"},
    {"formats"},
    {"mirror", "dataset", "model"},
    {"evaluation", "api", "batch"},
    {"training"},
    {"stages", "arguments", "cli"},
]
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def unit(module: str) -> str:
    """``sign_vq.formats.posezip`` -> ``formats``."""
    return module.split(".")[1] if module.count(".") else ""


def layer(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if unit(module) in names)


def imports(path: Path) -> set[str]:
    """The sign_vq modules ``path`` imports (at any depth of its code)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sign_vq"):
            found |= {f"{node.module}.{a.name}" if node.module == "sign_vq" else node.module for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sign_vq.")}
    return {name for name in found if name != "sign_vq.__version__"}


def modules() -> dict[str, Path]:
    paths = sorted(PACKAGE.rglob("*.py"))
    return {".".join(("sign_vq", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): p
            for p in paths}


def test_every_import_goes_down_the_layers_and_no_stage_imports_another():
    wrong = []
    for name, path in modules().items():
        if name == "sign_vq":
            continue
        for target in imports(path):
            if layer(target) > layer(name) or (unit(name) == unit(target) == "stages" and name != target):
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_modules_and_functions_stay_small():
    long = []
    for name, path in modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long.append(f"{name}: {len(text.splitlines())} lines")
        long += [f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines" for node in ast.walk(ast.parse(text))
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_the_render_stage_and_the_api_load_no_lightning():
    probe = "import sys, sign_vq.stages.render, sign_vq.api; print('lightning' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "False\n"

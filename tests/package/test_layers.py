"""The import rules of docs/ARCHITECTURE.md: lower layers never import upper ones, and heavy or optional
libraries stay in the layer that owns them. Every import counts, also one inside a function."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "actprobe"

BASE = "base"  # errors, _version, _text, _checks: importable by everyone
# layer → the actprobe layers it may import (besides itself and the base)
ALLOWED: dict[str, set[str]] = {
    BASE: set(),
    "runfile": set(),
    "stats": {"runfile.format"},
    "engine": {"stats", "runfile"},
    "training": {"engine"},
    "analysis": {"runfile"},
    "render": {"analysis", "runfile"},
    "models": set(),  # actprobe.nn, actprobe.init, actprobe.models
    "datasets": set(),
    "recipes": {"engine", "stats", "runfile", "training", "analysis", "render", "models", "datasets"},
    "cli": {"engine", "stats", "runfile", "training", "analysis", "render", "models", "datasets", "recipes"},
    "root": {"engine", "runfile", "compat", "render"},  # actprobe/__init__.py: lazy Probe, read, summary
    "compat": set(),  # names the moved modules as strings only
    "integrations": {"engine"},  # the Lightning and Hugging Face callbacks drive a Probe
}
# third-party library → the layers (or single modules) that may import it
LIBRARIES: dict[str, set[str]] = {
    "h5py": {"runfile"},
    "rich": {"render", "cli"},
    "matplotlib": {"render"},
    "typer": {"cli"},
    "click": {"cli"},
    "triton": {"stats"},
    "torch": {"stats", "engine", "training", "models", "datasets", "recipes", "cli", "runfile.storage", "integrations"},
    "torchvision": {"datasets"},
    "lightning": {"integrations"},
    "tensorboard": {"render.tensorboard"},  # actprobe export --tensorboard, an optional extra
    "pytorch_lightning": {"integrations"},
    "transformers": {"integrations"},
    "pandas": {"runfile.reader"},  # Run.to_pandas(), an optional extra
    "numpy": {"runfile", "stats", "engine", "training", "analysis", "render", "models", "datasets", "recipes",
              "cli"},
}
# layers whose __init__ imports nothing of actprobe, so that importing one module of them stays light
# (the engine and the statistics kernels import runfile.format without loading h5py)
EMPTY_INITS = {"runfile", "stats", "engine", "analysis", "render"}
# modules that the engine and the kernels import from runfile: no third-party library at all
LIGHT_MODULES = {"runfile.format", "runfile.lock"}
MODEL_SIDE = {"nn", "init", "models"}
BASE_MODULES = {"errors", "_version", "_text", "_checks"}


def layer_of(module: str) -> str:
    """The layer of ``actprobe.<module>`` (dotted, without the package name)."""
    first = module.split(".")[0]
    if module == "":
        return "root"
    if first in BASE_MODULES:
        return BASE
    if first in MODEL_SIDE:
        return "models"
    if first == "_compat":
        return "compat"
    if first == "__main__":
        return "cli"
    return first


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """``(line, absolute module)`` for every import in ``path`` (``module``: its dotted name): import
    statements, ``importlib.import_module("…")`` and ``__import__("…")`` with a literal name, and
    ``actprobe.x.y`` attribute chains after ``import actprobe``."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    root = module.split(".")[0]
    found, chains = [], []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and _is_import_call(node.func) and node.args:
            name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and not name.value.startswith("."):
                found.append((node.lineno, name.value))
        elif isinstance(node, ast.Attribute) and _chain(node).startswith(root + "."):
            chains.append((node.lineno, _chain(node)))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            # each imported name may be a module (from ..runfile import storage): judge target.name
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    # a.b.c is seen as a.b.c and as a.b: keep the longest chain of each line
    found += [(line, chain) for line, chain in chains
              if not any(other.startswith(chain + ".") for same, other in chains if same == line)]
    return found


def _is_import_call(func: ast.expr) -> bool:
    return (isinstance(func, ast.Name) and func.id in ("__import__", "import_module")) or (
        isinstance(func, ast.Attribute) and func.attr == "import_module")


def _chain(node: ast.expr) -> str:
    """``a.b.c`` for an attribute chain rooted at a name; "" otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else ""


def allowed(source_layer: str, target: str) -> bool:
    """Whether a module of ``source_layer`` may import ``actprobe.<target>``."""
    target_layer = layer_of(target)
    if target_layer in (source_layer, BASE):
        return True
    return any(target == rule or target.startswith(rule + ".") or target_layer == rule
               for rule in ALLOWED[source_layer])


def violations(package_dir: Path, name: str = "actprobe") -> list[str]:
    """Every import in the package at ``package_dir`` that breaks the rules, as ``file:line: message``."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir).with_suffix("")
        parts = [p for p in relative.parts if p != "__init__"]
        module = ".".join([name, *parts])
        inner_module = ".".join(parts)
        layer = layer_of(inner_module)
        for line, target in imports(path, module):
            where = f"{path.relative_to(package_dir.parent)}:{line}"
            top = target.split(".")[0]
            if top == name:
                inner = target[len(name) + 1:]
                if inner_module in EMPTY_INITS and inner:
                    found.append(f"{where}: {module}/__init__.py imports {target}; it must import nothing")
                elif inner and not allowed(layer, inner):
                    found.append(f"{where}: layer {layer} imports {target} (layer {layer_of(inner)})")
            elif inner_module in LIGHT_MODULES and top in LIBRARIES:
                found.append(f"{where}: {inner_module} imports {top}; it must stay free of third-party libraries")
            elif top in LIBRARIES and not any(inner_module == rule or inner_module.startswith(rule + ".")
                                              or layer == rule for rule in LIBRARIES[top]):
                found.append(f"{where}: {inner_module or 'actprobe'} imports {top}, allowed only in "
                             f"{', '.join(sorted(LIBRARIES[top]))}")
    return found


def test_the_package_keeps_its_import_rules():
    assert violations(PACKAGE_DIR) == []


def test_every_module_belongs_to_a_known_layer():
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = [p for p in path.relative_to(PACKAGE_DIR).with_suffix("").parts if p != "__init__"]
        assert layer_of(".".join(parts)) in ALLOWED, path


@pytest.mark.parametrize("file, line, message", [
    ("runfile/lock.py", "from ..analysis import summary", "layer runfile imports actprobe.analysis"),
    ("engine/hooks.py", "import rich", "engine.hooks imports rich"),
    ("stats/dispatch.py", "from ..engine.sites import site_name", "layer stats imports actprobe.engine.sites"),
    ("analysis/roles.py", "    import h5py", "analysis.roles imports h5py"),
    ("runfile/format.py", "import h5py", "runfile.format imports h5py; it must stay free"),
    ("runfile/lock.py", "import numpy", "runfile.lock imports numpy; it must stay free"),
    ("runfile/reader.py", "import torch", "runfile.reader imports torch"),
    ("runfile/__init__.py", "from . import storage", "actprobe.runfile/__init__.py imports actprobe.runfile.storage"),
    ("stats/plan.py", "x = importlib.import_module('actprobe.render.summary')", "layer stats imports actprobe.render"),
    ("engine/probe.py", "import actprobe\nx = actprobe.cli.app", "layer engine imports actprobe.cli.app"),
    ("stats/merge.py", "from ..runfile import storage", "layer stats imports actprobe.runfile.storage"),
    ("training/loop.py", "from ..render.progress import ProgressDisplay", "layer training imports actprobe.render"),
    ("render/summary.py", "from ..cli import app", "layer render imports actprobe.cli"),
])
def test_a_deliberate_bad_import_is_caught(tmp_path, file, line, message):
    copy = tmp_path / "actprobe"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.gz"))
    target = copy / file
    if line.startswith(" "):  # an import inside a function counts too
        line = f"def _late():\n{line}\n"
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    found = violations(copy)
    assert len(found) == 1, found
    assert found[0].startswith(f"actprobe/{file}:") and message in found[0], found[0]

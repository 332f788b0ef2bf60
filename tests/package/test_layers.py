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
    "root": {"engine", "runfile", "compat"},  # actprobe/__init__.py: lazy Probe, read, STATISTICS
    "compat": set(),  # names the moved modules as strings only
}
# third-party library → the layers that may import it
LIBRARIES: dict[str, set[str]] = {
    "h5py": {"runfile"},
    "rich": {"render", "cli"},
    "matplotlib": {"render"},
    "typer": {"cli"},
    "click": {"cli"},
    "triton": {"stats"},
    "torch": {"stats", "engine", "training", "models", "datasets", "recipes", "cli", "runfile"},
    "torchvision": {"datasets"},
}
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
    """``(line, absolute module)`` for every import in ``path`` (``module``: its dotted name)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            # each imported name may be a module (from ..runfile import storage): judge target.name
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


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
        layer = layer_of(".".join(parts))
        for line, target in imports(path, module):
            where = f"{path.relative_to(package_dir.parent)}:{line}"
            top = target.split(".")[0]
            if top == name:
                inner = target[len(name) + 1:]
                if inner and not allowed(layer, inner):
                    found.append(f"{where}: layer {layer} imports {target} (layer {layer_of(inner)})")
            elif top in LIBRARIES and layer not in LIBRARIES[top]:
                found.append(f"{where}: layer {layer} imports {top}, allowed only in {', '.join(sorted(LIBRARIES[top]))}")
    return found


def test_the_package_keeps_its_import_rules():
    assert violations(PACKAGE_DIR) == []


def test_every_module_belongs_to_a_known_layer():
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = [p for p in path.relative_to(PACKAGE_DIR).with_suffix("").parts if p != "__init__"]
        assert layer_of(".".join(parts)) in ALLOWED, path


@pytest.mark.parametrize("file, line, message", [
    ("runfile/lock.py", "from ..analysis import summary", "layer runfile imports actprobe.analysis"),
    ("engine/hooks.py", "import rich", "layer engine imports rich"),
    ("stats/dispatch.py", "from ..engine.sites import site_name", "layer stats imports actprobe.engine.sites"),
    ("analysis/roles.py", "    import h5py", "layer analysis imports h5py"),
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

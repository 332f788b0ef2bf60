"""Import paths of actprobe 0.1's flat modules, kept working after the move into layers.

``import actprobe.summary`` (and ``from actprobe.reader import read``, …) still works: a finder
serves each old name with the module that holds its contents now, after one ``DeprecationWarning``
naming the new path. docs/ARCHITECTURE.md lists the moves. Old names whose contents were split
(``kernels``, ``terminal``) resolve to a module that re-exports from each new home.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

# old module (under actprobe.) → the new module(s) holding its public names, searched in order
MOVED: dict[str, tuple[str, ...]] = {
    "format": ("runfile.format",),
    "_lock": ("runfile.lock",),
    "storage": ("runfile.storage",),
    "writer": ("runfile.writer",),
    "reader": ("runfile.reader",),
    "kernels": ("stats.dispatch", "stats.arena", "stats.plan", "stats.triton_backend", "stats.c_backend"),
    "reduce": ("stats.merge", "stats.single"),
    "triton_kernel": ("stats.triton_kernel",),
    "_cstats": ("stats._cstats",),
    "probe": ("engine.probe",),
    "settings": ("engine.settings",),
    "selection": ("engine.selection",),
    "hooks": ("engine.hooks",),
    "sites": ("engine.sites",),
    "recorder": ("engine.recorder",),
    "staging": ("engine.staging",),
    "roles": ("analysis.roles",),
    "summary": ("analysis.summary",),
    "diagnose": ("analysis.diagnose",),
    "compare": ("analysis.compare",),
    "terminal": ("render.summary", "render.progress"),
    "compare_view": ("render.compare",),
    "diagnose_view": ("render.diagnose",),
    "plots": ("render.figures",),
    "runner": ("cli.runner", "training.device", "training.loop"),
    "modelfile": ("cli.modelfile",),
    "run_command": ("cli.run_command", "cli.codes"),
    "recipe_command": ("cli.recipe_command", "cli.codes"),
    "recipes.figures": ("render.figures",),
    "recipes.progress": ("render.progress",),
    "recipes.layers": ("analysis.roles",),
}
PACKAGE = __name__.rpartition(".")[0]
# old module names that are also public functions of the package now: ``actprobe.summary("run.h5")``
# works whether or not ``import actprobe.summary`` (0.1's module) has put the moved module in its place
CALLABLE: dict[str, tuple[str, str]] = {"summary": ("render.summary", "summary")}


class _MovedModule(ModuleType):
    """An old module name: its attributes are looked up in the new modules, in order."""

    def __init__(self, name: str, targets: tuple[str, ...]) -> None:
        super().__init__(name, f"moved: see {', '.join(PACKAGE + '.' + t for t in targets)}")
        self._targets = targets

    def _modules(self) -> list[ModuleType]:
        return [importlib.import_module(f"{PACKAGE}.{target}") for target in self._targets]

    def _owner(self, attribute: str) -> ModuleType | None:
        return next((module for module in self._modules() if hasattr(module, attribute)), None)

    def __call__(self, *args: object, **kwargs: object) -> object:
        old = self.__name__.removeprefix(PACKAGE + ".")
        if old not in CALLABLE:
            raise TypeError(f"module {self.__name__!r} is not callable")
        module, name = CALLABLE[old]
        return getattr(importlib.import_module(f"{PACKAGE}.{module}"), name)(*args, **kwargs)

    def __getattr__(self, attribute: str) -> object:
        if attribute == "__all__":  # for `from actprobe.summary import *`: the public names of each new home
            return sorted({name for module in self._modules() for name in _public(module)})
        owner = self._owner(attribute)
        if owner is None:
            raise AttributeError(f"module {self.__name__!r} (moved) has no attribute {attribute!r}")
        return getattr(owner, attribute)

    def __setattr__(self, attribute: str, value: object) -> None:
        # setting a module constant through the old name (a test's monkeypatch) sets it where it is used
        owner = None if attribute.startswith("_") else self._owner(attribute)
        if owner is None:
            super().__setattr__(attribute, value)
        else:
            setattr(owner, attribute, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__getattr__("__all__")))


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        old = fullname.removeprefix(PACKAGE + ".")
        if old == fullname or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        old = spec.name.removeprefix(PACKAGE + ".")
        targets = MOVED[old]
        warnings.warn(f"{spec.name} has moved to {', '.join(PACKAGE + '.' + t for t in targets)}; the old path "
                      "will go in a later release", DeprecationWarning, stacklevel=2)
        return _MovedModule(spec.name, targets)

    def exec_module(self, module: ModuleType) -> None:
        pass


def _public(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name, value in vars(module).items() if not name.startswith("_")
                 and not isinstance(value, ModuleType) and getattr(value, "__module__", module.__name__) == module.__name__]
    return list(names)


def install_moved_modules() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())

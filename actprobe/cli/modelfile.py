"""Loading the model file that ``actprobe run FILE.py`` is given, and checking its contract.

A model file defines ``model()`` returning an ``nn.Module`` (required) and may define ``data()``
(an iterable of ``(inputs, targets)`` training batches), ``loss_fn(outputs, targets)``,
``optimizer(params)``, and ``input_shape`` (one sample, without the batch dimension) or
``example_input()`` (a whole batch) for the init check. Every failure of the user's code becomes a
``ModelFileError`` naming the file and line.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .._text import one_line
from ..errors import ActprobeError, ModelFileError

CONTRACT = ("a model file must define model() returning a torch.nn.Module; optionally data(), loss_fn, "
            "optimizer(params), and input_shape or example_input()")


@dataclass(frozen=True)
class ModelFile:
    """A loaded model file: its path and the parts of the contract it defines (None when absent)."""

    path: Path
    module: ModuleType
    model: Callable[[], Any]
    data: Callable[[], Any] | None
    loss_fn: Callable[[Any, Any], Any] | None
    optimizer: Callable[[Any], Any] | None
    input_shape: tuple[int, ...] | None
    example_input: Callable[[], Any] | None

    def call(self, what: str, function: Callable[..., Any], *args: Any) -> Any:
        """Call the user's ``function``; any exception becomes one ``ModelFileError`` line.

        ``ActprobeError``s pass through unchanged: they already say what is wrong (a data set not found).
        """
        try:
            return function(*args)
        except ActprobeError:
            raise
        except Exception as exc:
            raise ModelFileError(f"{where(self.path, exc)}{what} raised {one_line(exc, with_type=True)}") from None


def where(path: Path, exc: BaseException) -> str:
    """``"FILE:LINE: "`` of the innermost frame of ``exc`` inside ``path``, or ``"FILE: "``."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _same(f.filename, path)]
    return f"{path}:{frames[-1].lineno}: " if frames else f"{path}: "


def _same(filename: str, path: Path) -> bool:
    try:
        return Path(filename).resolve() == path.resolve()
    except OSError:
        return False


def load_model_file(path: str | Path) -> ModelFile:
    """Execute ``path`` as a module and return the parts of its contract.

    Raises:
        ModelFileError: missing or unreadable file, a syntax error (with file:line), an exception
            while executing it, no ``model()``, or a part of the wrong kind.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a file; {CONTRACT}")
    module = _execute(path)
    namespace = vars(module)
    model = namespace.get("model")
    if model is None:
        raise ModelFileError(f"{path} defines no model(); {CONTRACT}")
    for name in ("model", "data", "loss_fn", "optimizer", "example_input"):
        if namespace.get(name) is not None and not callable(namespace[name]):
            raise ModelFileError(f"{path}: {name} must be callable, got {type(namespace[name]).__name__}")
    return ModelFile(path=path, module=module, model=model, data=namespace.get("data"),
                     loss_fn=namespace.get("loss_fn"), optimizer=namespace.get("optimizer"),
                     input_shape=_input_shape(path, namespace.get("input_shape")),
                     example_input=namespace.get("example_input"))


def _execute(path: Path) -> ModuleType:
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: cannot read ({one_line(exc)})") from None
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as exc:
        raise ModelFileError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    name = f"actprobe_model_file_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # as `python FILE.py` would: the file may import its neighbours
    try:
        exec(code, vars(module))
    except ActprobeError:
        raise
    except Exception as exc:
        del sys.modules[name]
        raise ModelFileError(f"{where(path, exc)}error while loading: {one_line(exc, with_type=True)}") from None
    except SystemExit as exc:
        del sys.modules[name]
        raise ModelFileError(f"{path}: called exit({exc.code}) while loading") from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _input_shape(path: Path, value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    ok = isinstance(value, (tuple, list)) and len(value) > 0 and all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)
    if not ok:
        raise ModelFileError(f"{path}: input_shape must be a tuple of positive ints (one sample, no batch "
                             f"dimension), e.g. (1, 28, 28); got {value!r}")
    return tuple(value)

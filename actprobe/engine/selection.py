"""Which modules of a model are hooked: resolving the ``select`` option."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Union

from torch import nn

from ..errors import OptionError, SelectionError

ROOT_NAME = "<root>"

Predicate = Callable[[str, nn.Module], bool]
SelectItem = Union[str, type, Predicate]
Select = Union[SelectItem, Sequence[SelectItem], None]


def select_modules(model: nn.Module, select: Select = None) -> list[tuple[str, nn.Module]]:
    """Return ``(name, module)`` for every module that ``select`` picks, in registration order.

    Args:
        model: the model to probe.
        select: ``None`` picks every leaf module (one without children); the probe then also hooks
            the ``containers`` and records their outputs that no recorded site produced. Otherwise one item or a
            list of items, any of which may match: a glob on the qualified module name
            (``"features.*"``, ``"*relu*"``), a class name (``"ReLU"``, ``"nn.Conv2d"``: modules of that
            class or a subclass), an ``nn.Module`` subclass, or a predicate
            ``f(name, module) -> bool``. The root module is called ``"<root>"`` and is picked only
            by that exact name or by a predicate; globs and types never pick it.

    Raises:
        OptionError: an item of ``select`` is of a type that cannot select modules.
        SelectionError: nothing matches.
    """
    if not isinstance(model, nn.Module):
        raise OptionError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    items = _items(select)
    chosen = []
    for name, module in model.named_modules():
        is_root = module is model and name == ""
        shown = ROOT_NAME if is_root else name
        if items is None:
            hit = not is_root and next(module.children(), None) is None
        else:
            hit = any(_matches(item, shown, module, is_root) for item in items)
        if hit:
            chosen.append((shown, module))
    if not chosen:
        raise SelectionError(_nothing_selected(model, select))
    return chosen


def containers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every module with children except the root: with the default selection they are hooked too,
    and a container's output is recorded when no recorded site produced it (the attention of
    ``nn.MultiheadAttention``, whose ``out_proj`` is never called; a block's ``x + f(x)``)."""
    return [(name, module) for name, module in model.named_modules()
            if name and next(module.children(), None) is not None]


def _items(select: Select) -> list[SelectItem] | None:
    if select is None:
        return None
    items = list(select) if isinstance(select, (list, tuple)) else [select]
    if not items:
        raise OptionError("select is an empty list; pass None to select every leaf module")
    for item in items:
        if not (isinstance(item, str) or _is_module_type(item) or callable(item)):
            raise OptionError(
                f"select items must be name globs, nn.Module subclasses or predicates f(name, module);"
                f" got {item!r}"
            )
    return items


def _type_named(module: nn.Module, item: str) -> bool:
    """``"ReLU"``, ``"nn.ReLU"`` or ``"torch.nn.ReLU"``: the module is of that class or a subclass of it."""
    wanted = item.removeprefix("torch.").removeprefix("nn.")
    return any(cls.__name__ == wanted for cls in type(module).__mro__)


def _is_module_type(item: object) -> bool:
    return isinstance(item, type) and issubclass(item, nn.Module)


def _matches(item: SelectItem, name: str, module: nn.Module, is_root: bool) -> bool:
    if isinstance(item, str):
        return name == item if is_root else fnmatch.fnmatchcase(name, item) or _type_named(module, item)
    if _is_module_type(item):
        return not is_root and isinstance(module, item)
    return bool(item(name, module))


def _nothing_selected(model: nn.Module, select: Select) -> str:
    names = [name for name, _ in model.named_modules() if name]
    shown = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
    if select is None:
        return (f"{type(model).__name__} has no submodules to probe; pass select='{ROOT_NAME}' to "
                "record the model's own output")
    return f"select={select!r} matches no module of {type(model).__name__}; its modules are: {shown or 'none'}"

"""The layer graph: which site's output feeds which module call, traced during the first recorded step.

A call's inputs are traced back to the nearest site outputs they derive from: by tensor identity
(the same tensor object, unchanged since the site produced it, or a view of one), else through the
autograd graph (``grad_fn.next_functions``), which sees the functional code between modules —
``x + identity``, ``torch.cat``, ``flatten``. Forwards made without autograd (``torch.no_grad``)
have no such graph: only identity (an in-place module's input included) and views connect their
sites; under ``torch.inference_mode`` views do not know their base either.

The tracer holds tensors only through weak references and autograd nodes only until ``clear()``,
which the recorder calls when the first recorded step ends; nothing here runs after that.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from ..runfile.format import GRAPH_INPUT
from .sites import floating_outputs

def _version(tensor: torch.Tensor) -> int:
    try:
        return tensor._version
    except RuntimeError:  # inference tensors have no version counter
        return -1


def input_tensors(value: object) -> Iterator[torch.Tensor]:
    """Every floating-point tensor in a call's positional and keyword inputs, found as the outputs'
    are (``sites.floating_outputs``: tuples, lists and dicts, nested up to 4 deep)."""
    return (tensor for _, tensor in floating_outputs(value))


class GraphTracer:
    """Collects the edges (source site, target site) of one step's forwards."""

    def __init__(self) -> None:
        self.edges: set[tuple[int, int]] = set()
        self._by_identity: dict[int, tuple[weakref.ref[torch.Tensor], int, int]] = {}  # id → (tensor, version, site)
        self._by_node: dict[tuple[Any, int], int] = {}  # (grad_fn, output_nr) → site
        self._memo: dict[Any, frozenset[int]] = {}  # autograd node → the nearest sites it derives from

    def produced(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` is a recorded site's output (or a view of one), unchanged."""
        return self._identity(tensor) is not None

    def sources(self, inputs: object, outputs: Iterable[torch.Tensor] = ()) -> set[int]:
        """The sites that a call's inputs derive from; ``{GRAPH_INPUT}`` when none does. An input that
        is also one of the call's ``outputs`` was changed in place by the call (``ReLU(inplace=True)``):
        its identity counts whatever its version now is."""
        found: set[int] = set()
        in_place = {id(t) for t in outputs}
        for tensor in input_tensors(inputs):
            found |= self._sources_of(tensor, any_version=id(tensor) in in_place)
        return found or {GRAPH_INPUT}

    def add(self, tensor: torch.Tensor, site: int, sources: Iterable[int], inputs: object = ()) -> None:
        """Record that ``site`` produced ``tensor`` from ``sources`` (its call's ``inputs``)."""
        self.edges.update((source, site) for source in sources if source != site)
        try:
            self._by_identity[id(tensor)] = (weakref.ref(tensor), _version(tensor), site)
        except TypeError:  # a tensor subclass without weak references: found through autograd only
            pass
        if tensor.grad_fn is not None:
            self._by_node[(tensor.grad_fn, tensor.output_nr)] = site
        base = tensor._base
        if base is not None and base.grad_fn is not None and not any(base is t for t in input_tensors(inputs)):
            # an in-place change of a view (``out += x`` on a Linear's 3-D output) gives the view a new
            # grad_fn that reaches the base's node, not the view's: the base, made inside this call,
            # stands for this site too (not a base that came in as an input, nor one that stands for
            # another site already)
            self._by_node.setdefault((base.grad_fn, base.output_nr), site)

    def clear(self) -> None:
        self._by_identity.clear()
        self._by_node.clear()
        self._memo.clear()

    def _identity(self, tensor: torch.Tensor, any_version: bool = False) -> int | None:
        for candidate in (tensor, tensor._base):
            if candidate is None:
                continue
            entry = self._by_identity.get(id(candidate))
            if entry is not None and entry[0]() is candidate and (any_version or entry[1] == _version(candidate)):
                return entry[2]
        return None

    def _sources_of(self, tensor: torch.Tensor, any_version: bool = False) -> frozenset[int]:
        if any_version and tensor.grad_fn is None:
            site = self._identity(tensor, any_version=True)
            if site is not None:
                return frozenset((site,))
        site = self._identity(tensor)
        if site is not None:
            return frozenset((site,))
        node = tensor.grad_fn
        if node is None:
            return frozenset()
        site = self._by_node.get((node, tensor.output_nr))
        if site is not None:
            return frozenset((site,))
        return self._walk(node)

    def _walk(self, root: Any) -> frozenset[int]:
        """The nearest sites above ``root`` in the autograd graph (iterative: graphs can be deep)."""
        memo, by_node = self._memo, self._by_node
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node in memo:
                continue
            parents = [(n, nr) for n, nr in node.next_functions if n is not None]
            if not expanded:
                stack.append((node, True))
                stack.extend((n, False) for n, nr in parents if (n, nr) not in by_node and n not in memo)
                continue
            found: set[int] = set()
            for parent in parents:
                site = by_node.get(parent)
                found |= {site} if site is not None else memo.get(parent[0], frozenset())
            memo[node] = frozenset(found)
        return memo[root]

"""The layer graph of a run, as the rules walk it: successors, model outputs, and the paths along
which the signal's scale compounds.

A file with ``graph/edges`` gives the real data flow (parallel heads, residual branches); a file
without one (written before actprobe 0.2) is read as one chain of its sites in column order.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from ..runfile.reader import Run


@dataclass(frozen=True)
class LayerGraph:
    """Successors and predecessors of each site column (edges from the model's input left out)."""

    successors: tuple[tuple[int, ...], ...]
    predecessors: tuple[tuple[int, ...], ...]
    traced: bool  # False: no graph in the file (or one with a cycle), the sites read as one chain
    order: tuple[int, ...] = ()  # the columns in a topological order: every site after those feeding it

    @classmethod
    def of(cls, run: Run) -> LayerGraph:
        count = len(run.sites)
        chain = [(c, c + 1) for c in range(count - 1)]
        edges = chain if run.edges is None else sorted({(int(a), int(b)) for a, b in run.edges if 0 <= a != b})
        order = _topological(count, edges)
        traced = run.edges is not None
        if order is None:  # a cycle: not a data flow this actprobe wrote; read the sites as one chain
            edges, order, traced = chain, list(range(count)), False
        successors: list[list[int]] = [[] for _ in range(count)]
        predecessors: list[list[int]] = [[] for _ in range(count)]
        for a, b in edges:
            successors[a].append(b)
            predecessors[b].append(a)
        return cls(tuple(map(tuple, successors)), tuple(map(tuple, predecessors)), traced, tuple(order))

    def depths(self) -> list[int]:
        """Each site's depth: the most sites on a path from the model's input to it, itself excluded."""
        depth = [0] * len(self.successors)
        for column in self.order:
            depth[column] = max((depth[p] + 1 for p in self.predecessors[column]), default=0)
        return depth

    def is_output(self, column: int) -> bool:
        """Whether no recorded site consumes this site's output (a model output, such as logits)."""
        return not self.successors[column]

    def paths(self, members: Collection[int], barriers: Collection[int]) -> list[list[int]]:
        """The longest path of ``members`` ending at each member that has no member after it.

        Two members are consecutive when one feeds the other through sites that are not members and
        not ``barriers`` (normalisation layers, whose output scale does not depend on their input's:
        the signal's scale cannot compound across them). A member fed by two or more sites (the ReLU
        after a residual ``out += identity``) starts a path of its own: across a merge the variances
        add up, they do not compound. One pass in reverse topological order finds every member's
        nearest members, one pass in topological order the longest paths.
        """
        members, barriers = set(members), set(barriers)
        nearest: dict[int, set[int]] = {}  # column → the members it reaches without crossing one
        for column in reversed(self.order):
            reach: set[int] = set()
            for succ in self.successors[column]:
                if succ in members:
                    reach.add(succ)
                elif succ not in barriers:
                    reach |= nearest[succ]
            nearest[column] = reach
        best: dict[int, tuple[int, int | None]] = {}  # member → (path length, member before it)
        for column in (c for c in self.order if c in members):
            best.setdefault(column, (1, None))
            for nxt in nearest[column]:
                if len(self.predecessors[nxt]) < 2 and best[column][0] + 1 > best.get(nxt, (0, None))[0]:
                    best[nxt] = (best[column][0] + 1, column)
        ends = [c for c in sorted(members) if not any(len(self.predecessors[n]) < 2 for n in nearest[c])]
        return [_backtrack(best, end) for end in ends]


def _topological(count: int, edges: Sequence[tuple[int, int]]) -> list[int] | None:
    """The columns in a topological order (Kahn's, lowest column first among the ready), or None
    when the edges have a cycle."""
    indegree = [0] * count
    successors: list[list[int]] = [[] for _ in range(count)]
    for a, b in edges:
        successors[a].append(b)
        indegree[b] += 1
    ready = [c for c in range(count) if not indegree[c]]
    heapq.heapify(ready)
    order = []
    while ready:
        column = heapq.heappop(ready)
        order.append(column)
        for nxt in successors[column]:
            indegree[nxt] -= 1
            if not indegree[nxt]:
                heapq.heappush(ready, nxt)
    return order if len(order) == count else None


def _backtrack(best: dict[int, tuple[int, int | None]], end: int) -> list[int]:
    path: list[int] = [end]
    previous = best[end][1]
    while previous is not None:
        path.append(previous)
        previous = best[previous][1]
    return path[::-1]


def unique_paths(paths: Sequence[list[int]]) -> list[list[int]]:
    """Paths without those that are the start of a longer one (the same layers judged once)."""
    keep = []
    for path in sorted(paths, key=len, reverse=True):
        if not any(other[:len(path)] == path for other in keep):
            keep.append(path)
    return sorted(keep, key=lambda p: p[-1])

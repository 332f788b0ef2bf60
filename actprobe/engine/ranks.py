"""Where a probe in a multi-process job writes: one file per rank inside the run folder.

A probe inside a ``torch.distributed`` job (an initialised process group of more than one process, or
torchrun's ``RANK``/``WORLD_SIZE`` before the group exists) writes ``<path>/segment-<k>/rank-<r>.h5``:
``k`` is torchelastic's restart count (a restarted job starts a new segment and leaves the old one as
it was), ``r`` the rank. Each rank file is a complete run file of that rank's values, with the rows'
mergeable partials beside its statistics; readers merge the ranks into the statistics of the global
batch (``runfile.distributed``). The ranks never communicate: no collective can hang a rank, and a
rank that dies leaves the others' files whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OptionError

SEGMENT_PREFIX = "segment-"
RANK_PREFIX = "rank-"


@dataclass(frozen=True)
class RankPlace:
    """This process's place in a distributed run."""

    rank: int
    world_size: int
    segment: int  # torchelastic's restart count: 0 for the first attempt

    def file(self, folder: Path) -> Path:
        return folder / f"{SEGMENT_PREFIX}{self.segment}" / f"{RANK_PREFIX}{self.rank}.h5"

    def attributes(self) -> dict[str, Any]:
        """The root attributes that make a rank file one of its run (docs/FORMAT.md)."""
        return {"distributed": True, "rank": self.rank, "world_size": self.world_size, "segment": self.segment}


def place(distributed: bool | None, group: Any = None) -> RankPlace | None:
    """This process's place, or None for a single-process run.

    ``distributed``: None — a distributed run when the process belongs to a group of more than one
    process (``group``, else the default group, else torchrun's environment); True — always (a group of
    one process too); False — never (every process then needs a path of its own).

    Raises:
        OptionError: ``distributed=True`` or a ``group`` without any process group or torchrun environment.
    """
    if distributed is False:
        if group is not None:
            raise OptionError("group= is for distributed runs; it cannot go with distributed=False")
        return None
    found = _from_group(group) if group is not None else (_from_group(None) or _from_environment())
    if found is None:
        if distributed or group is not None:
            raise OptionError("distributed=True needs an initialised torch.distributed process group or "
                              "torchrun's RANK and WORLD_SIZE environment variables")
        return None
    rank, world_size = found
    if world_size <= 1 and not distributed:
        return None
    return RankPlace(rank=rank, world_size=world_size, segment=_restart_count())


def _from_group(group: Any) -> tuple[int, int] | None:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        if group is not None:
            raise OptionError("group= names a process group, but torch.distributed is not initialised")
        return None
    return dist.get_rank(group), dist.get_world_size(group)


def _from_environment() -> tuple[int, int] | None:
    rank, world_size = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None or world_size is None:
        return None
    try:
        return int(rank), int(world_size)
    except ValueError:
        raise OptionError(f"RANK={rank!r} and WORLD_SIZE={world_size!r} are not whole numbers") from None


def _restart_count() -> int:
    try:
        return max(0, int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")))
    except ValueError:
        return 0

"""Where a probe in a multi-process job writes: one file per rank inside the run folder.

A probe inside a ``torch.distributed`` job (an initialised process group of more than one process, or
torchrun's ``RANK``/``WORLD_SIZE`` before the group exists) writes ``<path>/segment-<k>/rank-<r>.h5``:
``k`` is torchelastic's restart count (a restarted job starts a new segment and leaves the old one as
it was), ``r`` the rank. Under torchelastic, a rank whose file in segment k was written by an earlier
attempt of the same job (``TORCHELASTIC_RUN_ID``: on several nodes, an agent that restarts its workers
because another node failed keeps its count) takes the next segment where it has none. With
``overwrite``, rank 0 of segment 0 removes what an earlier run left in the folder. Each rank file is a complete run file of that rank's values, with the rows'
mergeable partials beside its statistics; readers merge the ranks into the statistics of the global
batch (``runfile.distributed``). The ranks never communicate: no collective can hang a rank, and a
rank that dies leaves the others' files whole.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ActprobeWarning, OptionError
from ..runfile.lock import lock_path

SEGMENT_PREFIX = "segment-"
RANK_PREFIX = "rank-"


@dataclass(frozen=True)
class RankPlace:
    """This process's place in a distributed run."""

    rank: int
    world_size: int
    segment: int  # torchelastic's restart count: 0 for the first attempt
    job: str = ""  # torchelastic's run id (TORCHELASTIC_RUN_ID), the same for every attempt of one job

    def file(self, folder: Path, segment: int | None = None) -> Path:
        number = self.segment if segment is None else segment
        return folder / f"{SEGMENT_PREFIX}{number}" / f"{RANK_PREFIX}{self.rank}.h5"

    def attributes(self) -> dict[str, Any]:
        """The root attributes that make a rank file one of its run (docs/FORMAT.md)."""
        return {"distributed": True, "rank": self.rank, "world_size": self.world_size, "segment": self.segment,
                "job": self.job}

    def choose_file(self, folder: Path, overwrite: bool) -> RankPlace:
        """This rank's place for this attempt: its restart count's segment, or — under torchelastic, when an
        earlier attempt of the same job left this rank's file there — the first later segment without one.
        With ``overwrite``, the restart count's, and rank 0 of segment 0 clears what earlier runs left."""
        if overwrite:
            if self.segment == 0 and self.rank == 0:
                _clear(folder, self.world_size)
            return self
        segment = self.segment
        while self.job and _taken_by(self.file(folder, segment), self.job):
            segment += 1
        return RankPlace(self.rank, self.world_size, segment, self.job)


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
    if rank < 0:
        raise OptionError(f"this process is not in the process group given as group= (its rank there is {rank}); "
                          "make the probe on the group's members only")
    if world_size <= 1 and not distributed:
        return None
    return RankPlace(rank=rank, world_size=world_size, segment=_restart_count(),
                     job=os.environ.get("TORCHELASTIC_RUN_ID", ""))


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


def _taken_by(path: Path, job: str) -> bool:
    """Whether an earlier attempt of ``job`` took this rank file (a file of another job is refused later,
    as an existing file is; a lock without a file: an attempt that died before its first step)."""
    if path.exists():
        from ..runfile.reader import stored_attribute

        return stored_attribute(path, "job") == job
    return lock_path(path).exists()


def _clear(folder: Path, world_size: int) -> None:
    """Remove what an earlier run left in ``folder``: segments after the first, and rank files of ranks this
    job does not have. Each rank replaces its own file."""
    try:
        if not folder.is_dir():
            return
        for child in folder.iterdir():
            if child.name.startswith(SEGMENT_PREFIX) and child.name != f"{SEGMENT_PREFIX}0" and child.is_dir():
                shutil.rmtree(child)
        first = folder / f"{SEGMENT_PREFIX}0"
        for child in first.iterdir() if first.is_dir() else ():
            number = child.name.removeprefix(RANK_PREFIX).split(".", 1)[0]
            if child.name.startswith(RANK_PREFIX) and number.isdigit() and int(number) >= world_size:
                child.unlink()
    except OSError as exc:
        warnings.warn(f"overwrite: could not clear {folder} of an earlier run ({exc}); reading it may mix the two",
                      ActprobeWarning, stacklevel=4)


def _restart_count() -> int:
    try:
        return max(0, int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")))
    except ValueError:
        return 0

"""Where data sets are looked for: an explicit root, the CLI's ``--data-root``, ``$ACTPROBE_DATA``, the cache.

The search order is the same for every data set, and every place looked in is reported when
nothing is found. Downloads go to the cache folder: ``$ACTPROBE_CACHE``, else
``$XDG_CACHE_HOME/actprobe``, else ``~/.cache/actprobe``. ``ACTPROBE_OFFLINE=1`` turns downloads off.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .._text import one_line

T = TypeVar("T")

ENV_DATA = "ACTPROBE_DATA"
ENV_CACHE = "ACTPROBE_CACHE"
ENV_OFFLINE = "ACTPROBE_OFFLINE"
DOWNLOAD_TIMEOUT_S = 30.0

_configured_root: Path | None = None


@dataclass(frozen=True)
class Place:
    """A folder to look in, and why it is looked in (for messages)."""

    path: Path
    origin: str

    def __str__(self) -> str:
        return f"{self.path} ({self.origin})"


@contextmanager
def use_data_root(root: str | Path | None) -> Iterator[None]:
    """Within the block, data sets are looked for in ``root`` first (the CLI's ``--data-root``)."""
    global _configured_root
    previous = _configured_root
    _configured_root = Path(root).expanduser() if root is not None else previous
    try:
        yield
    finally:
        _configured_root = previous


def cache_dir() -> Path:
    """The folder that downloads go to."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "actprobe"


def search_places(root: str | Path | None = None) -> list[Place]:
    """The folders to look in, in order: ``root``, ``--data-root``, ``$ACTPROBE_DATA``, the cache."""
    places = []
    if root is not None:
        places.append(Place(Path(root).expanduser(), "root argument"))
    if _configured_root is not None:
        places.append(Place(_configured_root, "--data-root"))
    if os.environ.get(ENV_DATA):
        places.append(Place(Path(os.environ[ENV_DATA]).expanduser(), f"${ENV_DATA}"))
    places.append(Place(cache_dir(), "download cache"))
    unique: dict[Path, Place] = {}
    for place in places:
        unique.setdefault(place.path, place)
    return list(unique.values())


def downloads_allowed(download: bool | None) -> bool:
    """``download`` if given, else True unless ``$ACTPROBE_OFFLINE`` is set to something other than 0."""
    if download is not None:
        return download
    return os.environ.get(ENV_OFFLINE, "0") in ("", "0")


@contextmanager
def download_timeout(seconds: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    """Bound every socket operation of a download, so that a machine without network fails fast."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def find(root: str | Path | None, look_in: Callable[[Place], T | None], fetch: Callable[[Path], T],
         download: bool | None) -> tuple[T | None, list[str]]:
    """Look in each of ``search_places(root)``, then (if allowed) ``fetch`` into the cache folder.

    Returns what was found (None if nothing) and, for messages, every place looked in and how the
    download went. Errors reading a local copy propagate; any error of the download counts as "not
    downloadable here" (no network, a proxy, a full disk).
    """
    looked: list[str] = []
    for place in search_places(root):
        found = look_in(place)
        if found is not None:
            return found, looked
        looked.append(str(place))
    if not downloads_allowed(download):
        return None, looked + ["download: turned off"]
    cache = cache_dir()
    try:
        with download_timeout():
            return fetch(cache), looked
    except Exception as exc:
        return None, looked + [f"download into {cache} failed: {one_line(exc)}"]

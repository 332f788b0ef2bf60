"""An exclusive lock on ``<run file>.lock``, so that two writers never share one run file.

``flock`` locks die with their process, so a writer killed with SIGKILL leaves no stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from ..errors import RunFileError


def lock_path(path: Path) -> Path:
    """The sidecar lock file of run file ``path``: ``<name>.lock`` beside the real file, so that every
    name of one file (a symbolic link, a relative path) shares one lock."""
    real = Path(os.path.realpath(path))
    return real.with_name(real.name + ".lock")


class WriterLock:
    """Holds ``flock(LOCK_EX)`` on a sidecar file until ``release()``.

    Only the process that took it releases it: a child made with ``fork`` inherits the descriptor,
    and its ``release`` (at its exit, say) closes its copy without unlinking the file or unlocking
    the parent's writer.
    """

    def __init__(self, path: Path) -> None:
        self.path = lock_path(path)
        self._fd: int | None = None
        self._owner = os.getpid()
        for attempt in range(8):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    if attempt < 7:  # perhaps `writer_active` of a reader, which holds it for microseconds
                        time.sleep(0.02)
                        continue
                    raise RunFileError(
                        f"{path} is being written by another probe (lock {self.path} is held); "
                        "choose another path or wait until that run ends") from None
                raise RunFileError(f"cannot lock {self.path}: {exc.strerror}") from None
            if self._same_file(fd):  # a releasing writer may have unlinked it meanwhile
                self._fd = fd
                return
            os.close(fd)
        raise RunFileError(f"cannot lock {self.path}: it keeps being replaced")

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunFileError(f"cannot create {self.path}: {exc.strerror}") from None

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._fd is None:
            return
        if os.getpid() == self._owner:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        os.close(self._fd)  # in a forked child: its copy only; the parent's lock holds
        self._fd = None


def writer_active(path: Path) -> bool:
    """Whether a live writer holds the lock of run file ``path`` (without creating the lock file)."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def claim_path(path: Path, overwrite: bool) -> WriterLock:
    """Lock ``path`` for this writer: its folder made, and refused when it exists (unless ``overwrite``)."""
    if path.is_dir():
        raise RunFileError(f"{path} is a folder; give the path of an .h5 file to create")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFileError(f"cannot create folder {path.parent}: {exc.strerror}") from None
    lock = WriterLock(path)
    if path.exists() and not overwrite:
        lock.release()
        raise RunFileError(f"{path} already exists; pass overwrite=True to replace it, or choose another path")
    return lock

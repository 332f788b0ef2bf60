"""The exception and warning types that actprobe raises.

Every error a user can cause is an ``ActprobeError``: the CLI prints its message as one line and
exits with code 2. Failures while recording never raise into the training loop; they are reported
once as an ``ActprobeWarning`` and recording stops.
"""

from __future__ import annotations

import os
import sys

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class ActprobeError(Exception):
    """Base class of every error actprobe raises on purpose."""


class OptionError(ActprobeError, ValueError):
    """An option passed to the API has a wrong type or value."""


class SelectionError(ActprobeError):
    """``select`` matches no module of the model."""


class RunFileError(ActprobeError):
    """The run file cannot be created, is locked by another writer, or already exists."""


class FormatError(ActprobeError):
    """A file is missing, is not HDF5, is not an actprobe file, or has an unsupported version."""


class ActprobeWarning(UserWarning):
    """A problem while recording: reported once, training goes on."""


class ModelFileError(ActprobeError):
    """A model file given to ``actprobe run`` cannot be loaded or breaks its contract."""


class DataError(ActprobeError):
    """A data set cannot be found or read, or ``data()`` yields batches of the wrong form."""


def user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn``, called by the function that warns, that names the first frame
    outside actprobe: the user's line that called into it, whatever frames of actprobe are between (or none: a
    method written in C, ``Probe.step``, has no frame of its own)."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    return level
